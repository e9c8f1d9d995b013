"""A request body read once and handed on again: in memory while small, on disk when large."""

from __future__ import annotations

import tempfile
from typing import IO

from retrysafe.asgi import Message, Receive

MEMORY_LIMIT = 1024 * 1024
CHUNK = 64 * 1024


class BodySpool:
    """Keeps a body so a layer can inspect it before the app reads it.

    Uploads go up to ``--max-upload`` (50 MiB by default); past ``MEMORY_LIMIT``
    they move to a temporary file so no upload is ever held whole in memory.
    """

    def __init__(self, memory_limit: int = MEMORY_LIMIT) -> None:
        self._memory_limit = memory_limit
        self._chunks: list[bytes] = []
        self._size = 0
        self._file: IO[bytes] | None = None

    def write(self, chunk: bytes) -> None:
        if self._file is None and self._size + len(chunk) > self._memory_limit:
            self._file = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
            for kept in self._chunks:
                self._file.write(kept)
            self._chunks.clear()
        if self._file is not None:
            self._file.write(chunk)
        else:
            self._chunks.append(chunk)
        self._size += len(chunk)

    def receiver(self, upstream: Receive) -> Receive:
        """A ``receive`` that plays the body back, then defers to the real one (disconnects)."""
        if self._file is None:
            pending = [b"".join(self._chunks)]
        else:
            self._file.seek(0)
            pending = []
        source = self._file
        done = False

        async def receive() -> Message:
            nonlocal done
            if done:
                return await upstream()
            if source is None:
                done = True
                return {"type": "http.request", "body": pending.pop(), "more_body": False}
            chunk = source.read(CHUNK)
            done = len(chunk) < CHUNK
            return {"type": "http.request", "body": chunk, "more_body": not done}

        return receive

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
