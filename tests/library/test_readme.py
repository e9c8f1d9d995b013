"""The README's library section runs as written: its app, served by uvicorn, replays a create.

Its shell block's install commands are checked against the extras the project
declares; its first Python block is saved as ``main.py`` and served exactly as the
comment in it says (``uvicorn main:app``), on the Redis the block names. Its second,
the three ways a handler joins the record's transaction, runs as written on the
SQLite store it names, and with a PostgreSQL URL in its place, where its asyncpg
endpoint works too. Every ``retrysafe.…`` name the prose gives, every argument of its
table and every ``app.…()`` it calls exists.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.conftest import run_sync
from tests.server_process import ServerProcess, clean_env, free_port
from tests.support import redis_service
from tests.support.lifespan import running

from retrysafe.asgi import RetrySafe
from retrysafe.pipeline.tenancy import by_credential

from .extras_env import project_metadata
from .test_transaction_join import sql

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = re.search(r"^## Retry-safe your own ASGI app\n(.*?)^## ", README.read_text(), re.M | re.S)
assert SECTION is not None, "README lost its '## Retry-safe your own ASGI app' section"
[SHELL] = re.findall(r"```sh\n(.*?)```", SECTION.group(1), flags=re.S)
[PROGRAM, JOINING] = re.findall(r"```python\n(.*?)```", SECTION.group(1), flags=re.S)


def test_every_install_line_names_an_extra_the_project_declares(tmp_path: Path) -> None:
    declared = set(project_metadata(tmp_path).get_all("Provides-Extra") or [])
    named = re.findall(r"'retrysafe\[([a-z,]+)\]'", SHELL)
    assert named, SHELL
    for extras in named:
        assert set(extras.split(",")) <= declared, extras


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServerProcess]:
    if not run_sync(redis_service.reachable):
        pytest.skip(redis_service.SKIP_REASON)
    assert "redis://127.0.0.1:6379/0" in PROGRAM, "the test serves the Redis the README names"
    (tmp_path / "main.py").write_text(PROGRAM)
    command = re.search(r"# (uvicorn main:app)$", PROGRAM, re.M)
    assert command is not None, "the README says how to serve its example"
    port = free_port()
    log_path = tmp_path / "uvicorn.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", *command.group(1).split(), "--port", str(port)],
            cwd=tmp_path,
            env=clean_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = ServerProcess(process, port, log_path)
    try:
        wait_listening(server)
        yield server
    finally:
        server.stop()


def wait_listening(server: ServerProcess, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.process.poll() is None, server.log()
        try:
            httpx.get(f"{server.base_url}/openapi.json", timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError(f"not listening within {timeout} s:\n{server.log()}")


@pytest.mark.slow
@pytest.mark.redis
def test_the_example_app_replays_a_create(served: ServerProcess) -> None:
    credential = f"Bearer {uuid.uuid4().hex}"
    tenant = by_credential()({"type": "http", "headers": [(b"authorization", credential.encode())]})
    headers = {"Authorization": credential, "Idempotency-Key": "order-1"}
    try:
        with httpx.Client(base_url=served.base_url, headers=headers, timeout=30) as http:
            first = http.post("/orders", json={"sku": "book"})
            replay = http.post("/orders", json={"sku": "book"})
            missing = http.get("/nope")
    finally:
        run_sync(lambda: redis_service.delete_prefixed(f"retrysafe:idem:{tenant}:"))
    assert first.status_code == 201
    assert first.json() == {"id": "ord_1", "sku": "book"}
    assert replay.content == first.content
    assert replay.headers["idempotent-replayed"] == "true"
    assert missing.json()["errors"][0]["code"] == "not_found"


JOINING_STORE = '"sqlite:///idem.db"'
ENDPOINTS = ("/orders/core", "/orders/orm", "/orders/asyncpg")


def joining_app(workdir: Path, store: str | None) -> object:
    """The README's second block, saved as a module and imported: its ``app``.

    It runs on the store it names (relative to ``workdir``) or with ``store`` in its place.
    """
    assert JOINING_STORE in JOINING, "the test runs the store the README names"
    source = JOINING if store is None else JOINING.replace(JOINING_STORE, repr(store))
    name = f"readme_joining_{uuid.uuid4().hex}"
    path = workdir / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # SQLAlchemy resolves the models' annotations through it
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module.app


async def drive_joining(app: object, endpoints: tuple[str, ...]) -> list[httpx.Response]:
    """A create per endpoint with a key, its replay, and one whose answer is an error."""
    answers = []
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with (
        running(app) as started,  # type: ignore[arg-type]
        httpx.AsyncClient(transport=transport, base_url="http://t") as http,
    ):
        assert started[0]["type"] == "lifespan.startup.complete", started
        for n, path in enumerate(endpoints):
            headers = {"Authorization": "Bearer reader", "Idempotency-Key": f"k{n}"}
            first = await http.post(path, json={"sku": f"sku{n}"}, headers=headers)
            replay = await http.post(path, json={"sku": f"sku{n}"}, headers=headers)
            assert first.status_code == 201, first.text
            assert replay.content == first.content
            assert replay.headers["idempotent-replayed"] == "true"
            # The same sku again under another key: the insert fails, the 500 is
            # recorded, and nothing of it is kept.
            again = {"Authorization": "Bearer reader", "Idempotency-Key": f"again{n}"}
            failed = await http.post(path, json={"sku": f"sku{n}"}, headers=again)
            assert failed.status_code == 500, failed.text
            answers.append(first)
    return answers


async def test_the_joining_example_runs_as_written_on_sqlite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    app = joining_app(tmp_path, None)
    await drive_joining(app, ENDPOINTS[:2])
    assert await sql("sqlite:///idem.db", "SELECT sku FROM orders ORDER BY sku") == [
        "sku0",
        "sku1",
    ]


@pytest.mark.postgres
async def test_the_joining_example_runs_on_postgresql_with_asyncpg(
    tmp_path: Path, postgres_url: str
) -> None:
    app = joining_app(tmp_path, postgres_url)
    await drive_joining(app, ENDPOINTS)
    assert await sql(postgres_url, "SELECT sku FROM orders ORDER BY sku") == [
        "sku0",
        "sku1",
        "sku2",
    ]


def test_every_name_the_section_gives_exists() -> None:
    """Dotted ``retrysafe.…`` names, the arguments table and ``app.…()`` calls are real."""
    text = SECTION.group(1)
    names = set(re.findall(r"`[^`]*?(retrysafe(?:\.\w+)+)", text))
    assert "retrysafe.integrations.fastapi.install" in names, names
    for name in sorted(names):
        parts = name.split(".")
        for split in range(len(parts), 0, -1):
            try:
                found: object = importlib.import_module(".".join(parts[:split]))
            except ImportError:
                continue
            for attribute in parts[split:]:
                found = getattr(found, attribute)  # AttributeError: the README names nothing
            break
        else:
            raise AssertionError(f"the README names {name}, which does not import")
    parameters = inspect.signature(RetrySafe).parameters
    arguments = re.findall(r"^\| `(\w+)`(?: / `(\w+)`)? \|", text, re.M)
    assert len(arguments) >= 10, arguments
    for pair in arguments:
        for argument in filter(None, pair):
            assert argument in parameters, f"the README's table names {argument}"
    methods = set(re.findall(r"\bapp\.(\w+)\(", text))
    assert {"transaction", "session", "asyncpg_connection"} <= methods, methods
    for method in methods:
        assert callable(getattr(RetrySafe, method)), method
