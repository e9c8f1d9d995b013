"""Packaging by audience: the client alone by default, the library and each backend as extras.

The metadata is the one setuptools prepares from the current ``pyproject.toml``
(what ``pip install .`` would install). The import checks run in a fresh
interpreter that sees only the distributions one extra pulls in (see
:mod:`tests.library.extras_env`), so a module the extra forgot fails the import.
"""

from __future__ import annotations

import json
from email.message import Message
from importlib.metadata import distribution
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from .extras_env import (
    distributions_for,
    project_metadata,
    required_by,
    requirements,
    run_isolated,
    site_with_only,
)

SQL_DRIVERS = ("sqlalchemy", "aiosqlite", "asyncpg", "greenlet")
SERVER_ONLY = ("fastapi", "uvicorn", "alembic", "typer", "rich", *SQL_DRIVERS)
NOT_IN_THE_LIBRARY = (*SERVER_ONLY, "redis")


@pytest.fixture(scope="module")
def metadata(tmp_path_factory: pytest.TempPathFactory) -> Message:
    return project_metadata(tmp_path_factory.mktemp("project"))


def test_plain_install_requires_only_httpx(metadata: Message) -> None:
    """``pip install retrysafe`` is the client: httpx, and nothing server-side."""
    base = [r for r in requirements(metadata) if r.marker is None]
    assert [canonicalize_name(r.name) for r in base] == ["httpx"]


def test_every_audience_has_its_extra(metadata: Message) -> None:
    extras = set(metadata.get_all("Provides-Extra") or [])
    assert {"asgi", "sqlite", "postgres", "redis", "server", "test", "bench"} <= extras


def test_coredis_is_required_by_nothing(metadata: Message) -> None:
    """It was pulled in through limits' async-redis extra and never imported."""
    names = {canonicalize_name(r.name) for r in requirements(metadata)}
    assert "coredis" not in names
    for requirement in requirements(metadata):
        assert "async-redis" not in requirement.extras, str(requirement)


def test_the_library_extra_pulls_in_no_server_or_sql_distribution(metadata: Message) -> None:
    needed = distributions_for(metadata, frozenset({"asgi"}))
    assert [name for name in NOT_IN_THE_LIBRARY if name in needed] == []


def test_server_extra_covers_every_backend(metadata: Message) -> None:
    needed = distributions_for(metadata, frozenset({"server"}))
    for name in ("fastapi", "uvicorn", "alembic", "sqlalchemy", "aiosqlite", "asyncpg", "redis"):
        assert name in needed, name


def _specifier(metadata: Message, extra: str, name: str) -> Requirement:
    for requirement in required_by(metadata, frozenset({extra})):
        if canonicalize_name(requirement.name) == name:
            return requirement
    raise AssertionError(f"the {extra} extra does not require {name}")


def test_redis_stays_inside_what_limits_declares_for_it(metadata: Message) -> None:
    """limits' own ``redis`` extra bounds redis-py; ours may not allow a version it excludes."""
    ours = _specifier(metadata, "redis", "redis").specifier
    theirs = [
        r.specifier
        for r in map(Requirement, distribution("limits").requires or [])
        if canonicalize_name(r.name) == "redis"
        and r.marker is not None
        and r.marker.evaluate({"extra": "redis"})
    ]
    assert theirs, "limits no longer declares a redis extra"
    probes = {Version(s.version) for s in [*ours, *theirs[0]]}
    probes |= {Version(f"{v.major + 1}.0.0") for v in list(probes)}
    allowed_by_us_only = sorted(v for v in probes if v in ours and v not in theirs[0])
    assert allowed_by_us_only == []


def test_aiosqlite_is_pinned_to_the_tested_release_line(metadata: Message) -> None:
    """sqlite_driver.py uses a private aiosqlite method: a new minor release may drop it."""
    spec = _specifier(metadata, "sqlite", "aiosqlite").specifier
    installed = Version(distribution("aiosqlite").version)
    assert installed in spec
    assert Version(f"{installed.major}.{installed.minor + 1}.0") not in spec
    assert Version(f"{installed.major + 1}.0.0") not in spec


MOUNTED_APP_SERVES_A_REPLAY = """
import asyncio, httpx
from retrysafe.asgi import RetrySafe, single_tenant
import retrysafe.idempotency.fingerprint, retrysafe.idempotency.recovery
import retrysafe.idempotency.keys, retrysafe.idempotency.records, retrysafe.idempotency.store
import retrysafe.stores.memory, retrysafe.stores.url, retrysafe.envelope

async def orders(scope, receive, send):
    await receive()
    await send({"type": "http.response.start", "status": 201, "headers": []})
    await send({"type": "http.response.body", "body": b"created"})

async def main():
    app = RetrySafe(orders, store="memory://", tenant=single_tenant())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        await http.post("/orders", headers={"Idempotency-Key": "k"})
        replay = await http.post("/orders", headers={"Idempotency-Key": "k"})
    assert replay.headers["idempotent-replayed"] == "true", replay.headers

asyncio.run(main())
"""
"""A mounted app answering a replay: the library's whole request path, memory store."""

IMPORTED_MODULES = (
    "import json, sys\nprint(json.dumps(sorted({name.split('.')[0] for name in sys.modules})))\n"
)


def _run_with_only(metadata: Message, extras: set[str], tmp_path: Path, program: str) -> list[str]:
    site = site_with_only(tmp_path / "site", distributions_for(metadata, frozenset(extras)))
    result = run_isolated(site, program + IMPORTED_MODULES)
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout.strip().splitlines()[-1]))


def test_the_isolated_interpreter_really_lacks_what_the_extra_does_not_bring(
    metadata: Message, tmp_path: Path
) -> None:
    """The check below could pass by accident if this venv leaked in: prove it does not."""
    site = site_with_only(tmp_path / "site", distributions_for(metadata, frozenset({"asgi"})))
    result = run_isolated(site, "import sqlalchemy\n")
    assert result.returncode != 0
    assert "No module named 'sqlalchemy'" in result.stderr


def test_the_pipeline_runs_with_only_the_library_extra(metadata: Message, tmp_path: Path) -> None:
    modules = _run_with_only(metadata, {"asgi"}, tmp_path, MOUNTED_APP_SERVES_A_REPLAY)
    assert [name for name in NOT_IN_THE_LIBRARY if name in modules] == []


def test_a_backend_without_its_extra_is_a_clear_error(metadata: Message, tmp_path: Path) -> None:
    program = (
        "from retrysafe.asgi import store_from_url\n"
        "for url in ('redis://127.0.0.1:6379/0', 'sqlite:///idem.db'):\n"
        "    try:\n"
        "        store_from_url(url)\n"
        "    except ValueError as exc:\n"
        "        print(exc)\n"
    )
    site = site_with_only(tmp_path / "site", distributions_for(metadata, frozenset({"asgi"})))
    result = run_isolated(site, program)
    assert result.returncode == 0, result.stderr
    redis_error, sqlite_error = result.stdout.strip().splitlines()
    assert "needs the redis extra (pip install 'retrysafe[redis]')" in redis_error
    assert "needs the sqlite extra (pip install 'retrysafe[sqlite]')" in sqlite_error


def test_the_redis_store_runs_with_only_the_redis_extra(metadata: Message, tmp_path: Path) -> None:
    program = "import retrysafe.stores.redis, retrysafe.pipeline\n"
    modules = _run_with_only(metadata, {"redis"}, tmp_path, program)
    assert [name for name in SERVER_ONLY if name in modules] == []
