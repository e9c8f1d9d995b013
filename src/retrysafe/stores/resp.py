"""RESP2, the Redis wire format: commands encoded for sending, replies parsed as bytes arrive.

Only what the Redis store's pipelined connection needs: a command is an array
of bulk strings, and a reply is a bulk string (``None`` for nil), an integer, a
simple string, an error or an array of those, nested to any depth. Parsing is
incremental: a reply split across reads waits for its rest, and one read may
carry many replies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["ErrorReply", "Reply", "ReplyParser", "command"]


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """An error Redis answered (``-ERR …``, ``-NOSCRIPT …``): a value here, raised by the caller.

    It is a value, not an exception, because it belongs to one command among
    many on the connection: the parser hands it to that command's waiter only.
    """

    message: str

    @property
    def code(self) -> str:
        """The error's first word (``ERR``, ``NOSCRIPT``, ``WRONGTYPE``)."""
        return self.message.split(" ", 1)[0]


Reply = bytes | int | None | ErrorReply | list["Reply"]
"""Bulk and simple strings are bytes (as redis-py returns them), nil is ``None``."""


def command(args: Sequence[str | bytes]) -> bytes:
    """``args`` as one RESP2 array of bulk strings; text is sent as UTF-8."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else arg
        parts += (b"$%d\r\n" % len(data), data, b"\r\n")
    return b"".join(parts)


class _Incomplete(Exception):
    """The buffer ends inside a reply; ``needed`` bytes must be there before trying again."""

    def __init__(self, needed: int) -> None:
        self.needed = needed


class ReplyParser:
    """Replies from a stream of bytes, in the order they arrive.

    Bytes that end inside a reply are kept for the next :meth:`feed`; a reply
    known to need more bytes (a long bulk string arriving in pieces) is not
    parsed again until they are there, so a large reply costs one parse, not
    one per read.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._needed = 0

    def feed(self, data: bytes) -> list[Reply]:
        """The replies ``data`` completes (none, one or many); the rest waits for more."""
        buffer = self._buffer
        buffer += data
        if len(buffer) < self._needed:
            return []
        replies: list[Reply] = []
        at = 0
        end = len(buffer)
        try:
            while at < end:
                reply, at = _parse(buffer, at)
                replies.append(reply)
        except _Incomplete as incomplete:
            self._needed = incomplete.needed - at
        else:
            self._needed = 0
        del buffer[:at]
        return replies

    @property
    def pending(self) -> int:
        """Bytes held that do not make a whole reply yet."""
        return len(self._buffer)


def _parse(buffer: bytearray, at: int) -> tuple[Reply, int]:
    """The reply starting at ``at`` and where the next one starts; :class:`_Incomplete` if cut."""
    line_end = buffer.find(b"\r\n", at)
    if line_end < 0:
        raise _Incomplete(len(buffer) + 1)
    kind = buffer[at]
    if kind == 0x24:  # $ bulk string
        length = int(buffer[at + 1 : line_end])
        if length < 0:
            return None, line_end + 2
        start = line_end + 2
        stop = start + length
        if len(buffer) < stop + 2:
            raise _Incomplete(stop + 2)
        return bytes(buffer[start:stop]), stop + 2
    if kind == 0x3A:  # : integer
        return int(buffer[at + 1 : line_end]), line_end + 2
    if kind == 0x2A:  # * array
        count = int(buffer[at + 1 : line_end])
        if count < 0:
            return None, line_end + 2
        items: list[Reply] = []
        at = line_end + 2
        for _ in range(count):
            item, at = _parse(buffer, at)
            items.append(item)
        return items, at
    if kind == 0x2B:  # + simple string
        return bytes(buffer[at + 1 : line_end]), line_end + 2
    if kind == 0x2D:  # - error
        return ErrorReply(buffer[at + 1 : line_end].decode(errors="replace")), line_end + 2
    raise ValueError(f"not a RESP2 reply: type byte {bytes([kind])!r}")
