"""A TCP proxy before Redis that loses one reply for real: the command runs, no answer arrives.

The HTTP fault proxy cannot speak RESP, and what matters here is below any
protocol: the proxy forwards bytes both ways, and once armed with a marker it
forwards the next client write containing that marker to Redis, waits for the
first byte of Redis's answer (so the command has certainly run), throws the
answer away and closes the client's connection. The client sees a connection
error after sending, exactly as when a network fails between a command and its
reply; redis-py then reconnects (through the proxy, which forwards normally
again) and retries the command.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from tests.support.threaded_server import ThreadedTcpServer


class ReplyDroppingProxy(ThreadedTcpServer):
    name = "Redis reply-dropping proxy"

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        super().__init__()
        self._upstream = (upstream_host, upstream_port)
        self._lock = threading.Lock()
        self._marker: bytes | None = None
        self.connections = 0
        """Client connections accepted so far (a retry after a drop opens a new one)."""
        self.dropped = 0
        """Replies thrown away so far."""

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def drop_reply_to(self, marker: bytes) -> None:
        """Lose the reply to the next command whose bytes contain ``marker`` (once)."""
        with self._lock:
            self._marker = marker

    def _take_marker(self, chunk: bytes) -> bool:
        with self._lock:
            if self._marker is not None and self._marker in chunk:
                self._marker = None
                return True
            return False

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            self.connections += 1
        up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        dropping = asyncio.Event()
        replies = asyncio.create_task(self._replies(up_reader, writer, dropping))
        try:
            while chunk := await reader.read(65536):
                if self._take_marker(chunk):
                    dropping.set()
                up_writer.write(chunk)
                await up_writer.drain()
                if dropping.is_set():
                    break
            await replies
        except (asyncio.CancelledError, ConnectionError):
            # Stopping the proxy (or a client hanging up) ends the connection; returning
            # instead of raising keeps asyncio from logging the cancellation as an error.
            return
        finally:
            replies.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await replies
            for each in (writer, up_writer):
                each.close()

    async def _replies(
        self,
        up_reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        dropping: asyncio.Event,
    ) -> None:
        while chunk := await up_reader.read(65536):
            if dropping.is_set():
                # The command ran (Redis answered); the client must never learn how.
                with self._lock:
                    self.dropped += 1
                writer.transport.abort()
                return
            writer.write(chunk)
            await writer.drain()
