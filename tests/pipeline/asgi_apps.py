"""Tiny ASGI apps and a raw ASGI driver that the pipeline layer tests wrap and call."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass, field

import httpx

from retrysafe.asgi import ASGIApp, Message, Receive, Scope, Send, state


async def read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def send_json(send: Send, status: int, payload: object) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


@dataclass
class EchoApp:
    """Reads the whole body, then answers ``status`` with the byte count; remembers each scope.

    ``extra`` joins the answer; ``/held`` waits for :attr:`held`'s release, ``/slow``
    first sleeps past any test deadline, and ``/missing`` answers 404.
    """

    status: int = 200
    extra: dict[str, object] = field(default_factory=dict)
    scopes: list[Scope] = field(default_factory=list)
    completed: int = 0
    held: HeldApp = field(default_factory=lambda: HeldApp())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scopes.append(scope)
        if scope["path"] == "/held":
            await self.held(scope, receive, send)
            return
        if scope["path"] == "/slow":
            await asyncio.sleep(5)
        body = await read_body(receive)
        self.completed += 1
        if scope["path"] == "/missing":
            await send_json(send, 404, {"errors": [{"code": "not_found"}]})
            return
        await send_json(send, self.status, {"received": len(body), **self.extra})

    @property
    def calls(self) -> int:
        return len(self.scopes)

    @property
    def last_state(self) -> dict[str, object]:
        return state(self.scopes[-1])


@dataclass
class RaisingApp:
    """Raises ``exc``, optionally after sending part or all of a response."""

    exc: BaseException
    after: str = "nothing"  # "nothing" | "start" | "complete"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.after in ("start", "complete"):
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send(
                {
                    "type": "http.response.body",
                    "body": b"partial",
                    "more_body": self.after == "start",
                }
            )
        raise self.exc


@dataclass
class HeldApp:
    """Holds every request until :attr:`release` is set, so tests control what is in flight."""

    release: asyncio.Event = field(default_factory=asyncio.Event)
    started: int = 0
    all_started: asyncio.Event = field(default_factory=asyncio.Event)
    expected: int = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.started += 1
        if self.started >= self.expected:
            self.all_started.set()
        await self.release.wait()
        await send_json(send, 200, {"held": True})


def client(app: ASGIApp, address: tuple[str, int] = ("127.0.0.1", 40000)) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=address), base_url="http://testserver"
    )


@dataclass
class RawResponse:
    status: int | None
    headers: list[tuple[bytes, bytes]]
    body: bytes
    complete: bool

    def header(self, name: bytes) -> bytes | None:
        return next((v for k, v in self.headers if k == name), None)

    def json(self) -> object:
        return json.loads(self.body)


def http_scope(
    method: str = "POST", path: str = "/things", headers: Iterable[tuple[bytes, bytes]] = ()
) -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": list(headers),
        "client": ("127.0.0.1", 40000),
        "server": ("testserver", 80),
    }


async def drive(app: ASGIApp, scope: Scope, chunks: Iterable[bytes] = ()) -> RawResponse:
    """Call ``app`` with exactly these headers and body chunks, which httpx would normalise."""
    pending = list(chunks) or [b""]
    response = RawResponse(None, [], b"", complete=False)

    async def receive() -> Message:
        if pending:
            return {"type": "http.request", "body": pending.pop(0), "more_body": bool(pending)}
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            response.status = message["status"]
            response.headers = list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            response.body += message.get("body", b"")
            response.complete = not message.get("more_body", False)

    await app(scope, receive, send)
    return response
