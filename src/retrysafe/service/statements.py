"""SQL shapes the two supported databases spell differently, chosen once per process."""

from __future__ import annotations

from sqlalchemy import Column, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert

from retrysafe.database import Database


def insert_unless_conflict(
    db: Database, table: Table, conflict: tuple[Column[str], ...], *returning: Column[str]
) -> Insert:
    """``INSERT … ON CONFLICT (conflict) DO NOTHING RETURNING returning``.

    The unique constraint decides who wins a race, in one statement and without
    an error: a unique violation would abort the whole transaction on PostgreSQL.
    A row comes back only when this statement inserted it.
    """
    insert = sqlite.insert if db.is_sqlite else postgresql.insert
    return insert(table).on_conflict_do_nothing(index_elements=list(conflict)).returning(*returning)
