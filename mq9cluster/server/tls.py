"""The server-side TLS context for client connections, built from the certificate files the
options name (``--tlscert``, ``--tlskey``, ``--tlscacert``, ``--tlsverify``).

As nats-server does by default, the plain-text INFO goes first (with ``tls_required``) and the
client then starts the TLS handshake; client.py upgrades the socket with ``loop.start_tls``.
"""

from __future__ import annotations

import ssl

from mq9cluster.config import Settings
from mq9cluster.errors import ConfigError

#: Seconds a client has to finish the TLS handshake after INFO.
HANDSHAKE_TIMEOUT = 5.0


def client_tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The context for client connections, or None when TLS is off; a bad file is a ConfigError."""
    if not settings.client_tls:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
        if settings.tls_ca_cert:
            context.load_verify_locations(cafile=settings.tls_ca_cert)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load TLS certificate files: {exc}") from None
    if settings.tls_verify:
        context.verify_mode = ssl.CERT_REQUIRED
    return context
