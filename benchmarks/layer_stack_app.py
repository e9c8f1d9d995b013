"""The layers of benchmarks/layers.py served by uvicorn, to confirm their cost under wrk.

    uvicorn layer_stack_app:stack --app-dir benchmarks --loop uvloop --http httptools …
    uvicorn layer_stack_app:bare  --app-dir benchmarks …   (the canned replay alone)

``stack`` is every layer above idempotency around the canned replay, ``bare`` the
canned replay alone; driven with ``MODE=same API_KEY=rs_bench_secret`` and
create.lua, the difference in server CPU per request is what the layers cost in
a real server (uvicorn, httptools, sockets), without any store or database.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # started by uvicorn from benchmarks/: make the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import layers
from retrysafe.asgi import ASGIApp, Receive, Scope, Send
from retrysafe.log_config import configure_structlog
from retrysafe.observability.metrics import Metrics
from retrysafe.settings import Settings

if __name__ == "layer_stack_app":  # served by uvicorn, not imported by a test
    # As `retrysafe serve --log-level warning` sets it up (LOG_LEVEL=info writes the lines).
    configure_structlog(os.environ.get("LOG_LEVEL", "warning"))


def _stacked() -> ASGIApp:
    app: ASGIApp = layers.canned_replay
    for layer in layers.layers(Settings(), Metrics()):
        app = layer.wrap(app)
    return app


_STACK = _stacked()


async def stack(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "http":  # no lifespan: nothing here starts or stops
        await _STACK(scope, receive, send)


async def bare(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "http":
        await layers.canned_replay(scope, receive, send)
