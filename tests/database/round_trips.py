"""Count what a process sends its database: SQLite statements, PostgreSQL round trips.

For tests (and ``benchmarks/service_cpu.py``) that pin how many statements a
request costs. SQLite: every connection opened inside :func:`sqlite_statements`
traces its statements. PostgreSQL: every asyncpg connection opened inside
:func:`asyncpg_round_trips` counts the protocol operations that each make one
round trip to the server (a prepare, a bind and execute, a simple query...),
whichever way they were asked for (straight on asyncpg or through SQLAlchemy).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import asyncpg

from retrysafe.database import sqlite_driver

_ROUND_TRIPS = frozenset(
    {"prepare", "bind_execute", "bind_execute_many", "bind", "execute", "query", "close_statement"}
)


@contextmanager
def sqlite_statements() -> Iterator[list[str]]:
    """The SQL of every statement run on a SQLite connection opened while inside."""
    sent: list[str] = []
    real = sqlite3.connect

    def traced(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = real(*args, **kwargs)
        conn.set_trace_callback(sent.append)
        return conn

    sqlite_driver.sqlite3.connect = traced  # type: ignore[attr-defined]
    try:
        yield sent
    finally:
        sqlite_driver.sqlite3.connect = real  # type: ignore[attr-defined]


class _CountingProtocol:
    """asyncpg's protocol object, noting each operation that is a round trip."""

    def __init__(self, protocol: Any, sent: list[str]) -> None:
        self._protocol = protocol
        self._sent = sent

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._protocol, name)
        if name not in _ROUND_TRIPS:
            return attribute
        sent = self._sent

        def counted(*args: Any, **kwargs: Any) -> Any:
            query = next((a for a in args if isinstance(a, str) and " " in a), None)
            state = kwargs.get("state")
            if query is None and state is not None:
                query = getattr(state, "query", None)
            sent.append(f"{name}: {query or ''}")
            return attribute(*args, **kwargs)

        return counted


@contextmanager
def asyncpg_round_trips() -> Iterator[list[str]]:
    """One entry (``operation: query``) per round trip on an asyncpg connection opened inside."""
    sent: list[str] = []
    real_init = asyncpg.connection.Connection.__init__

    def init(self: Any, protocol: Any, *args: Any, **kwargs: Any) -> None:
        real_init(self, protocol, *args, **kwargs)
        self._protocol = _CountingProtocol(self._protocol, sent)

    asyncpg.connection.Connection.__init__ = init  # type: ignore[method-assign]
    try:
        yield sent
    finally:
        asyncpg.connection.Connection.__init__ = real_init  # type: ignore[method-assign]
