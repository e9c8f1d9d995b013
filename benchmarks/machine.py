"""What a benchmark ran on: the machine, the software versions, the code's git revision."""

from __future__ import annotations

import asyncio
import os
import platform
import sqlite3
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from benchmarks import databases, rows

REPO = Path(__file__).resolve().parent.parent
PACKAGES = (
    "retrysafe",
    "uvicorn",
    "uvloop",
    "httptools",
    "fastapi",
    "starlette",
    "sqlalchemy",
    "aiosqlite",
    "asyncpg",
    "redis",
    "asgi-idempotency-header",
    "fastapi-idempotency-key",
    "fastapi-idempotency",
    "idempotency-kit",
)


def _first_line(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "not installed"
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def memory_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 2**20
    return 0.0


def git_revision(source: Path = REPO) -> str:
    """``HEAD``'s short hash, marked when ``src/`` has uncommitted changes."""
    rev = _first_line(["git", "-C", str(source), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(
        ["git", "-C", str(source), "status", "--porcelain", "--", "src"],  # noqa: S607 - git from PATH
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return f"{rev} (with uncommitted changes in src/)" if dirty else rev


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def machine() -> dict[str, str]:
    return {
        "CPU": cpu_model(),
        "cores": str(os.cpu_count()),
        "RAM": f"{memory_gib():.1f} GiB",
        "kernel": platform.release(),
        "OS": platform.platform(terse=True),
    }


def _postgres_version() -> str:
    async def ask() -> str:
        import asyncpg

        conn = await asyncpg.connect(databases.POSTGRES_ADMIN_URL)
        try:
            return str(await conn.fetchval("SHOW server_version"))
        finally:
            await conn.close()

    try:
        return asyncio.run(ask())
    except Exception as exc:  # any failure only means the version is not known
        return f"not reachable ({type(exc).__name__})"


def _redis_version() -> str:
    try:
        import redis

        client = redis.Redis.from_url(rows.REDIS_URL, socket_timeout=3)
        try:
            return str(client.info("server")["redis_version"])
        finally:
            client.close()
    except Exception as exc:  # any failure only means the version is not known
        return f"not reachable ({type(exc).__name__})"


def versions(revision: str) -> dict[str, str]:
    found = {"Python": platform.python_version(), "retrysafe git revision": revision}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    found["SQLite library"] = sqlite3.sqlite_version
    found["PostgreSQL server"] = _postgres_version()
    found["Redis server"] = _redis_version()
    found["wrk"] = _first_line(["wrk", "-v"]).split(" [")[0]
    found["interpreter"] = sys.executable
    return found
