"""A TCP load balancer in front of the server processes, so a retry may land on another one.

Each client connection goes to the next backend in turn; a backend that
refuses (it was just killed) is skipped, and while every backend refuses the
balancer keeps trying for ``patience`` seconds before it gives up and closes
the connection — which the client sees as a lost connection and retries. It
splices bytes and knows nothing of HTTP, like a layer-4 balancer.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Sequence

from tests.support.threaded_server import ThreadedTcpServer

__all__ = ["Balancer"]


class Balancer(ThreadedTcpServer):
    """``127.0.0.1:<port>`` → round-robin over ``backends``, on its own thread and event loop."""

    name = "load balancer"

    def __init__(self, backends: Sequence[tuple[str, int]], *, patience: float = 3.0) -> None:
        super().__init__()
        self._backends = list(backends)
        self._turn = itertools.cycle(range(len(self._backends)))
        self._patience = patience
        self.connections = 0
        """Client connections accepted."""
        self.refused = 0
        """Connection attempts a backend refused (it was down)."""
        self.turned_away = 0
        """Client connections closed because no backend answered within ``patience``."""

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self._patience
        while True:
            for _ in range(len(self._backends)):
                host, port = self._backends[next(self._turn)]
                try:
                    return await asyncio.open_connection(host, port)
                except OSError:
                    self.refused += 1
            if loop.time() >= give_up:
                return None
            await asyncio.sleep(0.05)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        upstream = None
        try:
            upstream = await self._connect()
            if upstream is None:
                self.turned_away += 1
                return
            # When either side ends (a killed server, a client that left), end both.
            pipes = [
                asyncio.create_task(_pipe(reader, upstream[1])),
                asyncio.create_task(_pipe(upstream[0], writer)),
            ]
            try:
                await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pipe in pipes:
                    pipe.cancel()
                await asyncio.gather(*pipes, return_exceptions=True)
        except asyncio.CancelledError:
            pass
        finally:
            for stream in (writer, upstream[1] if upstream else None):
                if stream is not None:
                    stream.close()
                    with contextlib.suppress(Exception):
                        await stream.wait_closed()


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """Copy until ``source`` ends, then close ``sink`` so the other side sees the end too."""
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    finally:
        sink.close()
