"""A Redis stand-in on a loopback port, in the test's own event loop, that misbehaves on cue.

A real Redis always answers, and answers at once; what the pipelined connection
must survive is a server that does not: one that holds its replies (so a test can
cancel a caller while its command is in flight), resets a connection with
commands unanswered, or accepts and never answers at all. It speaks just enough
RESP2: ``ECHO x`` answers ``x``, ``AUTH``, ``SELECT`` and ``CLIENT`` answer
``+OK``, anything else an error. Every command it reads is kept, per
connection, so tests can see what was sent and how often.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Self

from retrysafe.stores.resp import ReplyParser

SETUP = frozenset({b"AUTH", b"SELECT", b"CLIENT"})
"""Commands of the connection's handshake, answered at once and not counted by ``reset_after``."""


class ScriptedRedis:
    """Listens on ``127.0.0.1:<port>`` inside ``async with``; attributes say how to misbehave."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        """The port to listen on (0: a free one), then the port it listens on."""
        self.commands: list[list[list[bytes]]] = []
        """Per connection accepted, every command read on it, handshake included."""
        self.hold: asyncio.Event | None = None
        """While set to an unset event, replies wait for it (in order, as Redis would send them)."""
        self.silent = False
        """Read commands and never answer them."""
        self.reset_after: int | None = None
        """On the first connection: after reading this many commands (handshake aside),
        reset the connection without answering any of them."""
        self.reset_all = False
        """Apply ``reset_after`` to every connection, not only the first."""
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._arrived = asyncio.Event()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def connections(self) -> int:
        return len(self.commands)

    def sent(self, connection: int) -> list[list[bytes]]:
        """The commands read on connection ``connection`` (0 is the first), handshake aside."""
        return [each for each in self.commands[connection] if each[0] not in SETUP]

    async def received(self, count: int, connection: int = 0) -> None:
        """Return once ``count`` commands (handshake aside) were read on ``connection``."""
        while self.connections <= connection or len(self.sent(connection)) < count:
            self._arrived.clear()
            await self._arrived.wait()

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for handler in list(self._handlers):
            handler.cancel()
        for handler in list(self._handlers):
            with contextlib.suppress(asyncio.CancelledError):
                await handler
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._serve(len(self.commands), reader, writer)
        except (asyncio.CancelledError, ConnectionError):
            return  # the server stopping, or the client hanging up
        finally:
            self._handlers.discard(task)
            writer.transport.abort()

    async def _serve(
        self, number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        received: list[list[bytes]] = []
        self.commands.append(received)
        parser = ReplyParser()
        counted = 0
        while data := await reader.read(65536):
            answers = []
            for command in parser.feed(data):
                assert isinstance(command, list)
                args = [bytes(arg) for arg in command if isinstance(arg, bytes)]
                received.append(args)
                if args[0] in SETUP:
                    writer.write(b"+OK\r\n")
                    continue
                counted += 1
                answers.append(_answer(args))
            self._arrived.set()
            resets = number == 0 or self.reset_all
            if resets and self.reset_after is not None and counted >= self.reset_after:
                writer.transport.abort()
                return
            if self.silent or not answers:
                continue
            if self.hold is not None:
                await self.hold.wait()
            writer.write(b"".join(answers))


def _answer(args: list[bytes]) -> bytes:
    if args[0].upper() == b"ECHO" and len(args) == 2:
        return b"$%d\r\n%s\r\n" % (len(args[1]), args[1])
    return b"-ERR unknown command '%s'\r\n" % args[0]
