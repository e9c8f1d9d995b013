"""Keep the garbage collector's full passes off the request path by freezing what startup built."""

from __future__ import annotations

import gc


def freeze_startup_heap() -> None:
    """Collect once, then move every object alive now into the permanent generation.

    A server's heap is mostly what importing FastAPI, SQLAlchemy and pydantic and
    building the app created (about 140 000 objects here), and it lives as long as
    the process. CPython's full collection walks all of it each time it runs (about
    once per 6 s of creates under load in docs/benchmarks.md) and holds the event
    loop for tens to hundreds of milliseconds meanwhile, every request in flight
    waiting: that pause was the create path's p99. Frozen objects are never
    traversed again; everything created afterwards is collected as before.
    """
    gc.collect()
    gc.freeze()
