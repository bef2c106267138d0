"""Composition root: builds the broker's parts from Settings, wires them and runs them on uvloop."""

from __future__ import annotations

import asyncio
import logging
import signal

import uvloop

from mq9cluster import __version__, logs
from mq9cluster.config import Settings
from mq9cluster.errors import ConfigError
from mq9cluster.server.monitor import Monitor
from mq9cluster.server.server import Server

log = logging.getLogger("mq9cluster.app")


def prepare_data_dir(settings: Settings) -> None:
    """Create the data directory, or say clearly why it cannot be used."""
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"data dir {settings.data_dir}: {exc.strerror}") from None
    probe = settings.data_dir / ".write-test"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"data dir {settings.data_dir} is not writable: {exc.strerror}") from None


async def serve(settings: Settings) -> None:
    """Run one broker node until SIGTERM/SIGINT (graceful) or SIGUSR2 (lame duck) ends it."""
    prepare_data_dir(settings)
    server = Server(settings)
    try:
        await server.start()
    except OSError as exc:
        raise ConfigError(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}") from None
    monitor = None
    if settings.http_port:
        monitor = Monitor(server)
        try:
            await monitor.start(settings.host, settings.http_port)
        except OSError as exc:
            await server.shutdown()
            raise ConfigError(f"cannot listen on {settings.host}:{settings.http_port} (monitoring): {exc.strerror}") from None
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task] = set()

    def spawn(coro) -> None:
        task = loop.create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    loop.add_signal_handler(signal.SIGTERM, lambda: spawn(server.shutdown()))
    loop.add_signal_handler(signal.SIGINT, lambda: spawn(server.shutdown()))
    loop.add_signal_handler(signal.SIGUSR2, lambda: spawn(server.enter_lame_duck()))
    log.info(
        "mq9cluster %s ready: nats://%s:%d, data dir %s, server name %s",
        __version__, settings.host, server.port, settings.data_dir, settings.server_name,
    )
    await server.stopped.wait()
    if monitor is not None:
        monitor.close()


def run(settings: Settings) -> None:
    """Configure logging and run the node on uvloop."""
    logs.configure(settings.log_level_number)
    uvloop.run(serve(settings))
