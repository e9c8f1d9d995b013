"""uvicorn's httptools protocol, sending a response's head and its body in one write.

uvicorn writes the status line and headers when the app sends
``http.response.start`` and the body on ``http.response.body``: two ``write``
calls for a JSON answer of a few hundred bytes, two loopback or network segments,
two wake-ups of the client. Under wrk those two system calls were about a fifth
of a replay's server CPU. Here a short write waits for the next one, and the two
go out as one; what nothing follows in the same event-loop iteration goes out at
the end of it, so no answer waits longer than the requests already running.

``retrysafe serve`` runs uvicorn with it; an app served with uvicorn from Python
takes it as ``uvicorn.run(app, loop="uvloop", http=JoinedWritesProtocol)`` (it
needs httptools, as uvicorn's own ``httptools`` protocol does).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["JoinedWritesProtocol"]

_HOLD_LIMIT = 16 * 1024
"""Longer writes go out at once: a head is short, and a big chunk gains nothing from waiting."""


class JoinedWritesProtocol(HttpToolsProtocol):
    """httptools' protocol with the connection's writes joined as above; the rest is uvicorn's."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = JoinedWrites(transport, self.loop)


class JoinedWrites(asyncio.Transport):
    """A transport that holds one short write until the next write or the loop's next turn.

    Every call that writes, ends or hands the connection over sends what is held
    first, so bytes always leave in the order they were written.
    """

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.writelines((held, data))
        elif len(data) <= _HOLD_LIMIT:
            self._held = bytes(data)
            self._loop.call_soon(self._release)
        else:
            self._transport.write(data)

    def _release(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held)

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        self._release()
        self._transport.writelines(list_of_data)

    def write_eof(self) -> None:
        self._release()
        self._transport.write_eof()

    def close(self) -> None:
        self._release()
        self._transport.close()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._release()
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + len(self._held or b"")

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)
