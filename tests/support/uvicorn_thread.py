"""An ASGI app served by a real uvicorn on a loopback port, on a thread of the test process.

Tests that need real HTTP to an app they built in-process (the service with a
provider double, a provider double itself, a mounted library app) share this
lifecycle: bind port 0 first and hand uvicorn the socket (no race with other
tests for a "free" port), wait until uvicorn says it has started, and stop it by
asking it to exit and joining its thread, loudly if it does not.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn

STARTUP_TIMEOUT = 15.0
"""Bound on starting and on stopping, each."""


@dataclass(frozen=True)
class UvicornThread:
    """A started server: its port, and how to stop it."""

    port: int
    server: uvicorn.Server
    thread: threading.Thread
    sock: socket.socket
    """The listening socket handed to uvicorn, closed once it has stopped."""

    @property
    def url(self) -> str:
        """Base URL without a trailing slash, e.g. ``http://127.0.0.1:54321``."""
        return f"http://127.0.0.1:{self.port}"

    def request_stop(self) -> None:
        self.server.should_exit = True

    def wait_stopped(self) -> None:
        self.thread.join(timeout=STARTUP_TIMEOUT)
        if self.thread.is_alive():  # pragma: no cover - a hung shutdown fails loudly
            raise RuntimeError("the test server did not shut down")
        self.sock.close()

    def stop(self) -> None:
        """Shut the server down and wait until it has (lifespan shutdown included)."""
        self.request_stop()
        self.wait_stopped()


def start_uvicorn(app: Any, **config: Any) -> UvicornThread:
    """Serve ``app`` with ``uvicorn.Config(app, **config)`` (quiet by default) on a free port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    options: dict[str, Any] = {"log_level": "warning", "access_log": False, "ws": "none"}
    server = uvicorn.Server(uvicorn.Config(app, **{**options, **config}))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"uvicorn-{port}", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    return UvicornThread(port, server, thread, sock)


@contextlib.contextmanager
def serving(app: Any, **config: Any) -> Iterator[UvicornThread]:
    """:func:`start_uvicorn` for the length of a ``with`` block."""
    running = start_uvicorn(app, **config)
    try:
        yield running
    finally:
        running.stop()
