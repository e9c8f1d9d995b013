"""How listing commands print: aligned columns for people, or one JSON object a line."""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import typer

__all__ = ["Output", "OutputOption", "print_rows"]


class Output(enum.StrEnum):
    TEXT = "text"
    JSON = "json"


OutputOption = Annotated[
    Output, typer.Option("--output", help="text for people, json (one object a line).")
]


def print_rows(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], output: Output) -> None:
    """``rows`` on stdout: JSON lines, or a table under a header of ``columns``.

    In the table ``None`` is ``-`` and a tuple is joined with commas, so every cell
    is one word and ``awk`` or ``cut`` can read a column.
    """
    if output is Output.JSON:
        for row in rows:
            typer.echo(json.dumps({name: row[name] for name in columns}, separators=(",", ":")))
        return
    cells = [[_cell(row[name]) for name in columns] for row in rows]
    widths = [max(len(text) for text in column) for column in zip(columns, *cells, strict=True)]
    for line in [list(columns), *cells]:
        typer.echo(
            "  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)).rstrip()
        )


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, tuple | list):
        return ",".join(map(str, value))
    return str(value)
