"""A fault-injecting HTTP/1.1 TCP proxy for tests: the network failures a client must survive.

It sits between a client and a real server on loopback and, request by
request, either relays or injects one fault:

* ``Fault.RELAY`` — forward the request, return the answer.
* ``Fault.DROP_AFTER_RESPONSE`` — forward, read the server's whole answer
  (so the server executed and committed), then close the client's
  connection without sending it: the client sees "server disconnected".
* ``Fault.STALL`` — forward and read the answer, then send nothing until the
  client gives up (its read timeout) or ``stall_seconds`` pass.
* ``Fault.RESET`` — forward and read the answer, then reset the client's
  connection (RST via ``SO_LINGER`` 0): the client sees "connection reset".
* ``Fault.RESET_BEFORE_FORWARD`` — reset at once; the server never sees it.
* ``Canned(...)`` — answer with raw HTTP without forwarding (a 503 from a
  load balancer, a 429, a 409 in flight).
* ``ReplaceAnswer(canned)`` — forward, let the server execute, then send the
  canned answer instead of the server's (a 5xx after the write happened).
* ``Fault.TRUNCATE_ANSWER`` — forward and read the answer, send its head and
  half its body, then close: the client sees the connection end mid-answer.
* ``SlowAnswer(chunk_size, interval)`` — forward, then trickle the server's
  answer to the client ``chunk_size`` bytes every ``interval`` seconds (a
  slow body; with an interval above the client's read timeout it times out
  mid-body). With ``body_only`` the head goes at once and only the body trickles.
* ``SlowRequest(chunk_size, interval)`` — trickle the request to the server
  the same way (a slow upload), then relay the answer.
* ``ThrottledRequest(bytes_per_second)`` — take the request body *from the
  client* at that rate, forwarding as it comes (a throttled uplink: the
  client's own writes block), then relay the answer. A client that gives up
  mid-body is recorded with ``body_complete=False``.

Requests with no planned action are relayed, or, when a chooser is set
(``set_chooser``), get the action it picks: a chaos run draws every
request's fault at random that way.

Every request is recorded — method, path, headers (so the
``Idempotency-Key``), body, the action taken, whether it was forwarded and
the server's status — so a test can assert how many requests reached the
server and with which keys.

The proxy runs its own asyncio loop in a thread, so sync and async clients
under test use it alike. It parses just enough HTTP/1.1 to find message
boundaries (Content-Length, chunked, or read-to-close) and forwards the raw
bytes untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import http
import json
import socket
import struct
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

from tests.support.threaded_server import ThreadedTcpServer

__all__ = [
    "Action",
    "Canned",
    "Chooser",
    "Fault",
    "FaultProxy",
    "RecordedRequest",
    "ReplaceAnswer",
    "SlowAnswer",
    "SlowRequest",
    "ThrottledRequest",
]


class Fault(enum.Enum):
    """Faults that need no parameters; see the module docstring."""

    RELAY = "relay"
    DROP_AFTER_RESPONSE = "drop_after_response"
    STALL = "stall"
    RESET = "reset"
    RESET_BEFORE_FORWARD = "reset_before_forward"
    TRUNCATE_ANSWER = "truncate_answer"


@dataclass(frozen=True)
class Canned:
    """A raw HTTP answer the proxy sends itself; the connection is closed after it."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""

    @classmethod
    def error(
        cls,
        status: int,
        code: str,
        *,
        retry_after: float | None = None,
        details: str = "injected by the fault proxy",
    ) -> Canned:
        """An answer in the service's error envelope (SPEC §1)."""
        title = http.HTTPStatus(status).phrase
        document = {
            "errors": [{"title": title, "details": details, "status": str(status), "code": code}]
        }
        headers = [("Content-Type", "application/json"), ("Request-Id", "req_fault_proxy")]
        if retry_after is not None:
            headers.append(("Retry-After", f"{retry_after:g}"))
        return cls(status, tuple(headers), json.dumps(document).encode())

    def render(self) -> bytes:
        reason = http.HTTPStatus(self.status).phrase
        lines = [f"HTTP/1.1 {self.status} {reason}"]
        lines += [f"{name}: {value}" for name, value in self.headers]
        lines += [f"Content-Length: {len(self.body)}", "Connection: close"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


@dataclass(frozen=True)
class ReplaceAnswer:
    """Forward the request, then send ``answer`` instead of the server's response."""

    answer: Canned


@dataclass(frozen=True)
class SlowAnswer:
    """Forward the request, then send the server's answer ``chunk_size`` bytes per ``interval``."""

    chunk_size: int = 64
    interval: float = 0.02
    body_only: bool = False
    """Send the status line and headers at once, trickle only the body."""


@dataclass(frozen=True)
class SlowRequest:
    """Send the request to the server ``chunk_size`` bytes per ``interval``, then relay."""

    chunk_size: int = 64
    interval: float = 0.02


@dataclass(frozen=True)
class ThrottledRequest:
    """Read the request body from the client at ``bytes_per_second``, forwarding as it comes."""

    bytes_per_second: int
    chunk_size: int = 16 * 1024


THROTTLED_BUFFER_FLOOR = 128 * 1024
"""The least receive buffer of a throttled connection: a window above loopback's MSS.

The buffer is shrunk after the connection opened with a large window. Once the window
it allows stays under one segment (loopback's MSS is 46-64 KiB) and the client has
closed with data still queued (a deadline cut it), the client's kernel waits for a
wider window that never comes: the proxy never read the end of the stream and never
recorded the cut. With 16 KiB that happened in about one run in three beside a busy CPU.
"""


def _throttled_buffer(action: ThrottledRequest) -> int:
    return max(action.chunk_size, THROTTLED_BUFFER_FLOOR)


Action = Fault | Canned | ReplaceAnswer | SlowAnswer | SlowRequest | ThrottledRequest

Chooser = Callable[[str, str], Action]
"""``chooser(method, path)``: the action for a request nothing was planned for."""


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the proxy saw it, and what happened to it."""

    method: str
    path: str
    headers: dict[str, str]
    """Lower-cased names."""
    body: bytes
    """The body with chunked transfer coding removed."""
    action: Action
    forwarded: bool
    """True when the request reached the server."""
    response_status: int | None = None
    """The server's status, when it answered (even if the client never saw it)."""
    response_headers: dict[str, str] = field(default_factory=dict)
    response_body: bytes = b""
    """The server's answer body (chunked coding removed), even if the client never saw it."""
    body_complete: bool = True
    """False when the client stopped sending before the body's end (a throttled upload)."""

    @property
    def idempotency_key(self) -> str | None:
        return self.headers.get("idempotency-key")

    @property
    def replayed(self) -> bool:
        """Whether the server answered from its idempotency record."""
        return self.response_headers.get("idempotent-replayed", "").lower() == "true"


@dataclass
class _Message:
    start_line: str
    headers: list[tuple[str, str]]
    body: bytes
    raw: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


class _ClosedError(Exception):
    """The peer closed the connection between messages."""


async def _read_head(reader: asyncio.StreamReader) -> _Message:
    """The start line and headers of one HTTP/1.1 message."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise _ClosedError from exc
        raise
    lines = head[:-4].decode("latin-1").split("\r\n")
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    return _Message(lines[0], headers, b"", head)


async def _read_body(
    reader: asyncio.StreamReader, message: _Message, *, request_method: str | None = None
) -> _Message:
    """``message`` with its body read; ``request_method`` set means a response to that request."""
    head = message.raw
    is_response = request_method is not None
    status = int(message.start_line.split()[1]) if is_response else 0
    if is_response and (100 <= status < 200 or status in (204, 304) or request_method == "HEAD"):
        return message
    if (message.header("transfer-encoding") or "").lower() == "chunked":
        raw, body = bytearray(head), bytearray()
        while True:
            size_line = await reader.readuntil(b"\r\n")
            raw += size_line
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                while (trailer := await reader.readuntil(b"\r\n")) != b"\r\n":
                    raw += trailer
                raw += b"\r\n"
                break
            chunk = await reader.readexactly(size + 2)
            raw += chunk
            body += chunk[:-2]
        message.raw, message.body = bytes(raw), bytes(body)
    elif (length := message.header("content-length")) is not None:
        message.body = await reader.readexactly(int(length))
        message.raw = head + message.body
    elif is_response:
        message.body = await reader.read()
        message.raw = head + message.body
    return message


async def _read_message(
    reader: asyncio.StreamReader, *, request_method: str | None = None
) -> _Message:
    """One HTTP/1.1 message; ``request_method`` set means a response to that request."""
    return await _read_body(reader, await _read_head(reader), request_method=request_method)


async def _trickle(
    writer: asyncio.StreamWriter, data: bytes, chunk_size: int, interval: float
) -> None:
    """Write ``data`` a chunk at a time with a pause before each chunk after the first."""
    for start in range(0, len(data), chunk_size):
        if start:
            await asyncio.sleep(interval)
        writer.write(data[start : start + chunk_size])
        await writer.drain()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST instead of FIN: SO_LINGER on with a zero timeout, then abort."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy(ThreadedTcpServer):
    """Proxy ``127.0.0.1:<port>`` → ``upstream``, applying planned faults request by request.

    Use as a context manager (or ``start``/``stop``); ``url`` is where the
    client under test connects.
    """

    name = "fault proxy"

    def __init__(self, upstream_host: str, upstream_port: int, *, stall_seconds: float = 5.0):
        super().__init__()
        self._upstream = (upstream_host, upstream_port)
        self.stall_seconds = stall_seconds
        self._lock = threading.Lock()
        self._plan: deque[tuple[Action, str | None]] = deque()
        self._chooser: Chooser | None = None
        self._records: list[RecordedRequest] = []

    # -- test-facing API --------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def plan(self, *actions: Action, method: str | None = None) -> None:
        """Queue ``actions`` for the next matching requests (by ``method`` if given).

        Requests with no queued action are relayed.
        """
        with self._lock:
            self._plan.extend((action, method) for action in actions)

    def set_chooser(self, chooser: Chooser | None) -> None:
        """Let ``chooser(method, path)`` pick the action for requests with none planned.

        Planned actions still come first; ``None`` goes back to relaying. The
        chooser runs on the proxy's thread, once per request.
        """
        with self._lock:
            self._chooser = chooser

    def clear(self) -> None:
        """Forget the plan and the recorded requests."""
        with self._lock:
            self._plan.clear()
            self._records.clear()

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received, in arrival order."""
        with self._lock:
            return list(self._records)

    @property
    def forwarded(self) -> list[RecordedRequest]:
        """The requests that reached the server."""
        return [record for record in self.requests if record.forwarded]

    def requests_to(self, method: str, path_prefix: str) -> list[RecordedRequest]:
        return [
            record
            for record in self.requests
            if record.method == method and record.path.startswith(path_prefix)
        ]

    # -- one client connection --------------------------------------------------

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        aborted = False
        try:
            while True:
                try:
                    request = await _read_head(reader)
                    method, path = request.start_line.split()[:2]
                    action = self._next_action(method, path)
                    if not isinstance(action, ThrottledRequest):
                        request = await _read_body(reader, request)
                except (_ClosedError, asyncio.IncompleteReadError, ConnectionError):
                    return
                headers = {name.lower(): value for name, value in request.headers}
                seen = RecordedRequest(method, path, headers, request.body, action, forwarded=False)
                if isinstance(action, ThrottledRequest):
                    if upstream is None:
                        upstream = await asyncio.open_connection(*self._upstream)
                    body, complete = await self._throttle(
                        reader, writer, upstream[1], request, action
                    )
                    seen = replace(seen, body=body, body_complete=complete)
                    if not complete:
                        self._record(seen, forwarded=True)
                        return
                    action = Fault.RELAY
                    request.raw = b""  # already forwarded
                if isinstance(action, Canned):
                    self._record(seen)
                    writer.write(action.render())
                    await writer.drain()
                    return
                if action is Fault.RESET_BEFORE_FORWARD:
                    self._record(seen)
                    _reset(writer)
                    aborted = True
                    return
                if upstream is None:
                    upstream = await asyncio.open_connection(*self._upstream)
                try:
                    if isinstance(action, SlowRequest):
                        await _trickle(upstream[1], request.raw, action.chunk_size, action.interval)
                    elif request.raw:
                        upstream[1].write(request.raw)
                        await upstream[1].drain()
                except ConnectionError:
                    # The server went away mid-request (killed): the client sees the close.
                    self._record(seen, forwarded=True)
                    return
                try:
                    response = await _read_message(upstream[0], request_method=method)
                except (_ClosedError, asyncio.IncompleteReadError, ConnectionError):
                    self._record(seen, forwarded=True)
                    return
                self._record(seen, forwarded=True, response=response)
                if action is Fault.RELAY or isinstance(action, SlowRequest | SlowAnswer):
                    if isinstance(action, SlowAnswer):
                        slow = response.raw
                        if action.body_only:
                            head = len(response.raw) - len(response.body)
                            writer.write(response.raw[:head])
                            slow = response.raw[head:]
                        await _trickle(writer, slow, action.chunk_size, action.interval)
                    else:
                        writer.write(response.raw)
                        await writer.drain()
                    if (response.header("connection") or "").lower() == "close":
                        return
                    continue
                if action is Fault.DROP_AFTER_RESPONSE:
                    return
                if action is Fault.STALL:
                    await self._wait_for_client_to_leave(reader)
                    return
                if action is Fault.RESET:
                    _reset(writer)
                    aborted = True
                    return
                if action is Fault.TRUNCATE_ANSWER:
                    head = len(response.raw) - len(response.body)
                    writer.write(response.raw[: head + len(response.body) // 2])
                    await writer.drain()
                    return
                if isinstance(action, ReplaceAnswer):
                    writer.write(action.answer.render())
                    await writer.drain()
                    return
                raise AssertionError(f"unhandled action {action!r}")
        except (asyncio.CancelledError, ConnectionError):
            pass  # stopping, or the client left mid-answer (a slow answer outlived its timeout)
        finally:
            # The proxy may be stopping (cancelling this task) while it closes: closing
            # is best effort either way, and must not end the task with an error.
            if upstream is not None:
                upstream[1].close()
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await upstream[1].wait_closed()
            if not aborted:
                writer.close()
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await writer.wait_closed()

    async def _throttle(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream: asyncio.StreamWriter,
        request: _Message,
        action: ThrottledRequest,
    ) -> tuple[bytes, bool]:
        """Forward the head, then the body as fast as ``action`` lets it come from the client.

        A small receive buffer makes the client's own writes block, as on a slow
        link, instead of the kernel soaking up megabytes at once. Returns the body
        taken and whether it was complete (the client may give up first).
        """
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _throttled_buffer(action))
        upstream.write(request.raw)
        await upstream.drain()
        length = int(request.header("content-length") or 0)
        body = bytearray()
        loop = asyncio.get_running_loop()
        started = loop.time()
        while len(body) < length:
            try:
                chunk = await reader.read(min(action.chunk_size, length - len(body)))
            except ConnectionError:
                chunk = b""
            if not chunk:
                return bytes(body), False
            body += chunk
            upstream.write(chunk)
            await upstream.drain()
            # Sleep until the rate allows the bytes taken so far.
            await asyncio.sleep(
                max(0.0, started + len(body) / action.bytes_per_second - loop.time())
            )
        return bytes(body), True

    async def _wait_for_client_to_leave(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(asyncio.TimeoutError, ConnectionError):
            async with asyncio.timeout(self.stall_seconds):
                while await reader.read(65536):
                    pass

    def _record(
        self, seen: RecordedRequest, *, forwarded: bool = False, response: _Message | None = None
    ) -> None:
        if response is not None:
            seen = replace(
                seen,
                response_status=int(response.start_line.split()[1]),
                response_headers={name.lower(): value for name, value in response.headers},
                response_body=response.body,
            )
        with self._lock:
            self._records.append(replace(seen, forwarded=forwarded))

    def _next_action(self, method: str, path: str) -> Action:
        with self._lock:
            for index, (action, wanted) in enumerate(self._plan):
                if wanted is None or wanted == method:
                    del self._plan[index]
                    return action
            chooser = self._chooser
        return Fault.RELAY if chooser is None else chooser(method, path)


@contextlib.contextmanager
def fault_proxy(host: str, port: int, *, stall_seconds: float = 5.0) -> Iterator[FaultProxy]:
    """``with fault_proxy(host, port) as proxy:`` — a started proxy, stopped afterwards."""
    with FaultProxy(host, port, stall_seconds=stall_seconds) as proxy:
        yield proxy
