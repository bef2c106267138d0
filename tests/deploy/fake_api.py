"""A stand-in Kubernetes API server for the preStop hook: HTTPS on loopback, one StatefulSet."""

from __future__ import annotations

import json
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

TOKEN = "test-service-account-token"


class FakeApi:
    """Answers GET .../namespaces/NS/statefulsets/NAME with ``{"spec": {"replicas": replicas}}``.

    ``replicas = None`` answers 404 (the StatefulSet is gone). A request without the service
    account's bearer token gets 401. ``requests`` records the paths asked for.
    """

    def __init__(self, workdir: Path, namespace: str, statefulset: str) -> None:
        self.path = f"/apis/apps/v1/namespaces/{namespace}/statefulsets/{statefulset}"
        self.replicas: int | None = 3
        self.requests: list[str] = []
        self.cert = workdir / "api.crt"
        key = workdir / "api.key"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                        "-keyout", str(key), "-out", str(self.cert)], check=True, capture_output=True)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, key)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.address = ("127.0.0.1", self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def write_service_account(self, directory: Path, namespace: str) -> None:
        """What Kubernetes projects into the pod: token, ca.crt, namespace."""
        (directory / "token").write_text(TOKEN)
        (directory / "ca.crt").write_text(self.cert.read_text())
        (directory / "namespace").write_text(namespace)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                api.requests.append(self.path)
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    self._answer(401, {"kind": "Status", "code": 401})
                elif self.path != api.path or api.replicas is None:
                    self._answer(404, {"kind": "Status", "code": 404})
                else:
                    self._answer(200, {"kind": "StatefulSet", "spec": {"replicas": api.replicas}})

            def _answer(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
