"""``retrysafe logs tail``: the API log in the terminal, read straight from the database."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text
from sqlalchemy import Select, select

from retrysafe.cli.database import run_with_database
from retrysafe.cli.errors import BadInput, CliError
from retrysafe.cli.options import DatabaseOption
from retrysafe.cli.output import Output, OutputOption
from retrysafe.database import Database
from retrysafe.database.schema import api_logs, organizations
from retrysafe.ids import lowest_id
from retrysafe.settings import DEFAULT_DATABASE_URL

__all__ = ["logs_app"]

LAG = 2.0
"""Seconds an entry may reach the database after a newer one and still be shown.

Each worker writes its entries in batches, so entries do not arrive in id order;
the tail re-reads this much behind the newest entry it has shown.
"""

BATCH = 5000
"""Most entries one poll reads."""

COLUMNS = (
    api_logs.c.id,
    api_logs.c.created_at,
    api_logs.c.request_id,
    api_logs.c.organization_id,
    api_logs.c.api_key_id,
    api_logs.c.method,
    api_logs.c.path,
    api_logs.c.query,
    api_logs.c.status,
    api_logs.c.duration_ms,
    api_logs.c.idempotency_key,
    api_logs.c.outcome,
    api_logs.c.rate_limit,
    api_logs.c.error_code,
)

_STATUS_STYLES = {2: "green", 3: "cyan", 4: "yellow", 5: "bold red"}
_OUTCOME_STYLES = {
    "executed": "blue",
    "replayed": "magenta",
    "mismatch": "red",
    "in_flight": "yellow",
    "not_recorded": "dim",
}

logs_app = typer.Typer(help="Read the API log.", no_args_is_help=True)


@logs_app.command("tail")
def tail(
    org: Annotated[
        str | None,
        typer.Option("--org", metavar="NAME", help="Only this organization (name or org_… id)."),
    ] = None,
    key: Annotated[
        str | None, typer.Option("--key", metavar="KEY_ID", help="Only requests with this key.")
    ] = None,
    status: Annotated[
        str | None,
        typer.Option("--status", metavar="STATUS", help="A status (404) or a class (4xx)."),
    ] = None,
    lines: Annotated[
        int, typer.Option("--lines", "-n", min=0, help="Entries shown before following.")
    ] = 10,
    follow: Annotated[
        bool, typer.Option("--follow/--no-follow", help="Keep printing new entries.")
    ] = True,
    interval: Annotated[
        float, typer.Option("--interval", min=0.05, metavar="SECONDS", help="Seconds per poll.")
    ] = 1.0,
    output: OutputOption = Output.TEXT,
    database: DatabaseOption = DEFAULT_DATABASE_URL,
) -> None:
    """Print the newest API-log entries, then follow new ones until interrupted."""
    if status is not None and not _valid_status(status):
        raise BadInput("--status must be a status such as 404 or a class such as 4xx")
    printer = _printer(output)

    async def run(db: Database) -> None:
        org_id = await _organization_id(db, org) if org is not None else None
        if org is not None and org_id is None:
            raise CliError(f"no organization named {org!r}")
        filters = _Filters(org_id, key, status)
        await _tail(db, filters, lines=lines, follow=follow, interval=interval, emit=printer)

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a follow ends
        run_with_database(database, run)


class _Filters:
    def __init__(self, org_id: str | None, key: str | None, status: str | None) -> None:
        self.org_id, self.key, self.status = org_id, key, status

    def apply(self, query: Select[Any]) -> Select[Any]:
        if self.org_id is not None:
            query = query.where(api_logs.c.organization_id == self.org_id)
        if self.key is not None:
            query = query.where(api_logs.c.api_key_id == self.key)
        if self.status is not None:
            if self.status.endswith("xx"):
                low = int(self.status[0]) * 100
                query = query.where(api_logs.c.status >= low, api_logs.c.status < low + 100)
            else:
                query = query.where(api_logs.c.status == int(self.status))
        return query


async def _tail(
    db: Database,
    filters: _Filters,
    *,
    lines: int,
    follow: bool,
    interval: float,
    emit: Callable[[Mapping[str, Any]], None],
) -> None:
    newest_first = filters.apply(select(*COLUMNS)).order_by(api_logs.c.id.desc()).limit(lines)
    async with db.read() as conn:
        backlog = [row._mapping for row in (await conn.execute(newest_first)).all()][::-1]
    for row in backlog:
        emit(row)
    if not follow:
        return
    # Entries already there count as shown (the backlog, and what -n left out).
    watermark = lowest_id("log", time.time() - LAG)
    async with db.read() as conn:
        existing = select(api_logs.c.id).where(api_logs.c.id > watermark)
        seen = set((await conn.execute(existing)).scalars())
    # Said only once that snapshot is taken: an entry written after this line is new.
    typer.echo("retrysafe: following the API log (Ctrl-C to stop)", err=True)
    history: deque[tuple[float, str]] = deque()
    while True:
        await asyncio.sleep(interval)
        query = filters.apply(select(*COLUMNS).where(api_logs.c.id > watermark))
        async with db.read() as conn:
            rows = (await conn.execute(query.order_by(api_logs.c.id).limit(BATCH))).all()
        for row in rows:
            if row.id not in seen:
                seen.add(row.id)
                emit(row._mapping)
        now = time.monotonic()
        if seen:
            history.append((now, max(seen)))
        while history and history[0][0] <= now - LAG:
            watermark = max(watermark, history.popleft()[1])
        seen = {entry for entry in seen if entry > watermark}


async def _organization_id(db: Database, name_or_id: str) -> str | None:
    query = select(organizations.c.id).where(
        (organizations.c.name == name_or_id) | (organizations.c.id == name_or_id)
    )
    async with db.read() as conn:
        return (await conn.execute(query)).scalar()


def _valid_status(text: str) -> bool:
    return (
        len(text) == 3
        and text[0] in "12345"
        and (text[1:] == "xx" or (text[1:].isascii() and text[1:].isdigit()))
    )


def _printer(output: Output) -> Callable[[Mapping[str, Any]], None]:
    if output is Output.JSON:

        def print_json(row: Mapping[str, Any]) -> None:
            print(json.dumps(dict(row), separators=(",", ":")), flush=True)

        return print_json
    console = Console(highlight=False, soft_wrap=True)

    def print_text(row: Mapping[str, Any]) -> None:
        console.print(_line(row))
        console.file.flush()

    return print_text


def _line(row: Mapping[str, Any]) -> Text:
    """One entry as one line: time, status, request, duration, outcome, ids."""
    status = int(row["status"])
    outcome = row["outcome"] or "-"
    target = f"{row['path']}?{row['query']}" if row["query"] else row["path"]
    parts: Iterator[tuple[str, str]] = iter(
        [
            (row["created_at"], "dim"),
            (str(status), _STATUS_STYLES.get(status // 100, "")),
            (f"{row['method']} {target}", ""),
            (f"{row['duration_ms']:.1f}ms", "dim"),
            (outcome, _OUTCOME_STYLES.get(outcome, "")),
            (row["request_id"], ""),
            (f"key={row['idempotency_key']}" if row["idempotency_key"] else "", ""),
            (f"code={row['error_code']}" if row["error_code"] else "", "yellow"),
            (f"org={row['organization_id'] or '-'} api_key={row['api_key_id'] or '-'}", "dim"),
        ]
    )
    line = Text()
    for text, style in parts:
        if text:
            if line:
                line.append("  ")
            line.append(text, style=style)
    return line
