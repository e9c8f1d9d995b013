"""Relational storage shared by the service and the SQL idempotency store."""

from retrysafe.database.engine import Database, DatabaseUnavailable, async_url

__all__ = ["Database", "DatabaseUnavailable", "async_url"]
