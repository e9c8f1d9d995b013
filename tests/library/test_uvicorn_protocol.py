"""The uvicorn protocol of ``serve`` and the README: a response's head and body in one write.

A real uvicorn (uvloop, httptools) on loopback serves a small ASGI app through
:class:`JoinedWritesProtocol`; the client is a plain socket, so what is checked is
the bytes on the wire. The write count is read off the real transport, wrapped
once more to count the calls that reach it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any, cast

import httpx
import pytest
from tests.support.uvicorn_thread import serving

from retrysafe.asgi import RetrySafe
from retrysafe.integrations.uvicorn import JoinedWrites, JoinedWritesProtocol

BIG = 40 * 1024
"""A chunk longer than what the transport holds back."""

writes: list[int] = []
"""Bytes per call that reached the connection's own transport, across connections."""

head_seen = threading.Event()
body_may_follow = threading.Event()


class _Counted:
    """Passes every call to the real transport, noting each write's size."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport

    def write(self, data: Any) -> None:
        writes.append(len(data))
        self._transport.write(data)

    def writelines(self, list_of_data: Any) -> None:
        chunks = list(list_of_data)
        writes.append(sum(map(len, chunks)))
        self._transport.writelines(chunks)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _CountingProtocol(JoinedWritesProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(cast(asyncio.Transport, _Counted(transport)))


async def _app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    path = scope["path"]
    while (await receive()).get("more_body"):
        pass
    if path == "/json":
        body = json.dumps({"data": {"id": "act_1", "padding": "x" * 200}}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 201, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    elif path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for index in range(50):
            chunk = b"%03d." % index
            if index in (10, 30):
                chunk = chunk * (BIG // len(chunk))
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if index % 7 == 0:
                await asyncio.sleep(0)
        await send({"type": "http.response.body", "body": b"end"})
    elif path == "/slow-body":
        # The head must reach the client while the body is still being made.
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.get_running_loop().run_in_executor(None, body_may_follow.wait, 10)
        await send({"type": "http.response.body", "body": b"late"})
    else:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


@contextlib.contextmanager
def _serving(app: Any) -> Iterator[str]:
    with serving(app, loop="uvloop", http=_CountingProtocol) as server:
        yield f"127.0.0.1:{server.port}"


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with _serving(_app) as address:
        yield address


def _exchange(address: str, request: bytes) -> bytes:
    """Send one request on a new connection, read until the server closes it."""
    host, port = address.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(request)
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
    return received


def _request(path: str, method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n".encode()


def test_a_short_answer_leaves_in_one_write(server: str) -> None:
    writes.clear()
    answer = _exchange(server, _request("/json"))
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 201 ")
    assert json.loads(body)["data"]["id"] == "act_1"
    assert writes == [len(answer)]


def test_keep_alive_answers_are_one_write_each(server: str) -> None:
    writes.clear()
    with httpx.Client(base_url=f"http://{server}") as client:
        for _ in range(5):
            assert client.get("/json").status_code == 201
    assert len(writes) == 5


def test_a_stream_arrives_whole_and_in_order(server: str) -> None:
    writes.clear()
    answer = _exchange(server, _request("/stream"))
    _, _, body = answer.partition(b"\r\n\r\n")
    # Chunked transfer coding: undo it, then check every piece is there, in order.
    pieces = []
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line, 16)
        pieces.append(body[:size])
        body = body[size + 2 :]
    content = b"".join(pieces)
    expected = (
        b"".join((b"%03d." % i) * (BIG // 4 if i in (10, 30) else 1) for i in range(50)) + b"end"
    )
    assert content == expected
    # Fewer writes than sends (short ones joined), and the big chunks were never held.
    assert len(writes) < 52
    assert sum(writes) == len(answer)


def test_the_head_is_not_held_for_a_body_that_comes_later(server: str) -> None:
    body_may_follow.clear()
    host, port = server.split(":")
    with socket.create_connection((host, int(port)), timeout=5) as conn:
        conn.sendall(_request("/slow-body"))
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = conn.recv(65536)  # times out (fails) if the head waits for the body
            assert chunk, "the connection closed before the head arrived"
            received += chunk
        body_may_follow.set()
        while chunk := conn.recv(65536):
            received += chunk
    assert received.startswith(b"HTTP/1.1 200 ")
    assert received.endswith(b"4\r\nlate\r\n0\r\n\r\n")


def test_head_requests_and_empty_answers_are_sent(server: str) -> None:
    assert _exchange(server, _request("/json", "HEAD")).startswith(b"HTTP/1.1 201 ")
    assert _exchange(server, _request("/nothing")).startswith(b"HTTP/1.1 204 ")


def test_a_mounted_app_served_by_uvicorn_answers_and_replays_in_one_write_each() -> None:
    # The library's use, as the README gives it: RetrySafe around an app, uvicorn with
    # this protocol. A keyed create and its replay, each answer one write.
    app = RetrySafe(_app, store="memory://")
    with _serving(app) as address, httpx.Client(base_url=f"http://{address}") as client:
        writes.clear()
        headers = {"Authorization": "Bearer k", "Idempotency-Key": "order-1"}
        first = client.post("/json", json={"n": 1}, headers=headers)
        again = client.post("/json", json={"n": 1}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    assert len(writes) == 2


class _Recording(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, bytes]] = []

    def write(self, data: Any) -> None:
        self.calls.append(("write", bytes(data)))

    def writelines(self, list_of_data: Any) -> None:
        self.calls.append(("writelines", b"".join(list_of_data)))

    def close(self) -> None:
        self.calls.append(("close", b""))

    def abort(self) -> None:
        self.calls.append(("abort", b""))

    def get_write_buffer_size(self) -> int:
        return 0


async def test_what_is_held_goes_out_before_the_connection_closes() -> None:
    inner = _Recording()
    joined = JoinedWrites(inner, asyncio.get_running_loop())
    joined.write(b"head")
    assert joined.get_write_buffer_size() == 4
    joined.close()
    assert inner.calls == [("write", b"head"), ("close", b"")]
    await asyncio.sleep(0)  # the end-of-iteration release finds nothing left to send
    assert inner.calls == [("write", b"head"), ("close", b"")]


async def test_an_abort_drops_what_is_held() -> None:
    inner = _Recording()
    joined = JoinedWrites(inner, asyncio.get_running_loop())
    joined.write(b"head")
    joined.abort()
    await asyncio.sleep(0)
    assert inner.calls == [("abort", b"")]


async def test_writelines_sends_what_is_held_first() -> None:
    inner = _Recording()
    joined = JoinedWrites(inner, asyncio.get_running_loop())
    joined.write(b"a")
    joined.writelines([b"b", b"c"])
    joined.write(b"d")
    await asyncio.sleep(0)
    assert inner.calls == [("write", b"a"), ("writelines", b"bc"), ("write", b"d")]
