"""Keep the garbage collector off the request path: freeze the startup heap, collect less often."""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000
"""Tracked objects allocated (net of those freed) before a young collection; CPython's is 700."""


def freeze_startup_heap() -> None:
    """Collect once, freeze every object alive now, and raise the young generation's threshold.

    A server's heap is mostly what importing FastAPI, SQLAlchemy and pydantic and
    building the app created (about 140 000 objects here), and it lives as long as
    the process. CPython's full collection walks all of it each time it runs (about
    once per 6 s of creates under load in docs/benchmarks.md) and holds the event
    loop for tens to hundreds of milliseconds meanwhile, every request in flight
    waiting: that pause was the create path's p99. Frozen objects are never
    traversed again; everything created afterwards is collected as before.

    A young collection starts when the count of tracked objects allocated and not
    yet freed passes the threshold. A request's objects die by reference counting
    when it ends, but 32 requests in flight keep well over 700 alive between them,
    so at CPython's default a collection ran every dozen creates (1 360 in 6 s),
    each walking the live requests for nothing: 14 µs of CPU per create. At 10 000
    one ran in those 6 s. Cycles are still collected, only in larger batches. A
    threshold set higher already, or 0 (automatic collection off), is left alone.
    """
    gc.collect()
    gc.freeze()
    young, *older = gc.get_threshold()
    if 0 < young < YOUNG_THRESHOLD:
        gc.set_threshold(YOUNG_THRESHOLD, *older)
