"""The example apps of ``examples/``, each served by uvicorn as a real process on loopback."""

from __future__ import annotations

import contextlib
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import run_sync
from tests.server_process import ServerProcess, clean_env, free_port
from tests.support import postgres, redis_service

from retrysafe.pipeline.tenancy import by_credential

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
APPS = ("fastapi_app", "starlette_app", "litestar_app")
STORES = ("memory", "sqlite", "postgresql", "redis")
_MARKS = {"redis": [pytest.mark.redis], "postgresql": [pytest.mark.postgres]}
EXAMPLES_AND_STORES = [
    pytest.param(
        (app, store),
        id=f"{app}-{store}",
        marks=[pytest.mark.slow, *_MARKS.get(store, [])],
    )
    for app in APPS
    for store in STORES
]
"""Every example on every store: on the SQL ones its orders join the record's transaction."""
JOINED = frozenset({"sqlite", "postgresql"})
TLS = ssl.create_default_context()
"""One context for every client: httpx loads the CA bundle anew for each (~60 ms of CPU)
otherwise, and the scenarios poll with fresh clients. (Loopback is plain HTTP anyway.)"""
REQUEST_TIMEOUT = 2.0
"""The examples' deadline in these tests: a claim's lease is this + 5 s."""


def launch_example(module: str, store_url: str, workdir: Path) -> ServerProcess:
    """Start ``uvicorn examples/MODULE:app`` on a free port, its orders in ``workdir``.

    It returns at once; :meth:`ServerProcess.wait_healthy` waits for it to serve.
    """
    port = free_port()
    env = clean_env(
        {
            "ORDERS_STORE": store_url,
            "ORDERS_DATABASE": f"sqlite+aiosqlite:///{workdir / 'orders.db'}",
            "ORDERS_REQUEST_TIMEOUT": str(REQUEST_TIMEOUT),
        }
    )
    log_path = workdir / f"{module}-{port}-{time.monotonic_ns()}.log"
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        f"{module}:app",
        "--app-dir",
        str(EXAMPLES),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--lifespan",
        "on",
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return ServerProcess(process, port, log_path)


def healthy(server: ServerProcess) -> ServerProcess:
    """``server`` once it answers ``/health``; killed if it never does."""
    try:
        server.wait_healthy(timeout=30)
    except BaseException:
        server.kill()
        raise
    return server


@dataclass
class Example:
    """One example app served for a whole module of scenarios, and its callers' credentials.

    A second process of the same app on the same store and files (``spare``) starts
    once the first serves, so that its start-up overlaps the scenarios: the SIGKILL
    scenario kills the first and retries on it.
    """

    module: str
    store: str
    store_url: str
    workdir: Path
    server: ServerProcess
    spare: ServerProcess | None = None
    tenants: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.server.base_url

    def credential(self) -> str:
        """A fresh caller: its own tenant, so scenarios never meet each other's keys."""
        value = f"Bearer {uuid.uuid4().hex}"
        scope = {"type": "http", "headers": [(b"authorization", value.encode())]}
        tenant = by_credential()(scope)
        assert tenant is not None
        self.tenants.append(tenant)
        return value

    def client(self, credential: str | None = None) -> httpx.Client:
        headers = {"Authorization": credential or self.credential()}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, verify=TLS)

    def calls(self) -> int:
        """How often the create handler ran in this server process."""
        return int(self._get("/stats")["calls"])

    def order_ids(self) -> list[str]:
        return list(self._get("/orders")["ids"])

    def _get(self, path: str) -> Any:
        with httpx.Client(base_url=self.url, timeout=10, verify=TLS) as http:
            return http.get(path).json()

    def fail_over(self) -> None:
        """SIGKILL the server (no shutdown code runs, as in a crash); serve on the spare."""
        assert self.spare is not None, "the spare serves once, after one crash"
        self.server.kill()
        self.server, self.spare = healthy(self.spare), None

    def stop(self) -> None:
        for server in (self.server, self.spare):
            if server is not None:
                server.stop()


def store_url(store: str, workdir: Path) -> str:
    """The store's URL; on PostgreSQL a throwaway database (dropped by :func:`started`)."""
    if store == "memory":
        return "memory://"
    if store == "sqlite":
        return f"sqlite:///{workdir / 'idem.db'}"
    if store == "postgresql":
        if not run_sync(postgres.reachable):
            pytest.skip(postgres.SKIP_REASON)
        return postgres.url_of(run_sync(postgres.create_database))
    if not run_sync(redis_service.reachable):
        pytest.skip(redis_service.SKIP_REASON)
    return redis_service.URL


@dataclass
class Launched:
    """An example's first server process, started (maybe not yet serving) on its store."""

    module: str
    store: str
    url: str
    workdir: Path
    server: ServerProcess


def drop_store(store: str, url: str) -> None:
    if store == "postgresql":
        name = url.rsplit("/", 1)[1]
        run_sync(lambda: postgres.drop_database(name))


class Launcher:
    """Starts each example's first process while the example before it is still tested.

    Importing an example takes a few seconds of CPU; started ahead, that overlaps
    the previous example's scenarios instead of adding up. What was started but
    never taken (its tests deselected or failed early) is stopped at the end.
    """

    def __init__(self, factory: pytest.TempPathFactory) -> None:
        self._factory = factory
        self._ahead: dict[tuple[str, str], Launched] = {}

    def launch(self, module: str, store: str) -> Launched:
        """Start ``module`` on ``store`` now (skips the test if the store is unreachable)."""
        workdir = self._factory.mktemp(f"{module}-{store}")
        url = store_url(store, workdir)
        try:
            return Launched(module, store, url, workdir, launch_example(module, url, workdir))
        except BaseException:
            drop_store(store, url)
            raise

    def start_ahead(self, module: str, store: str) -> None:
        if (module, store) in self._ahead:
            return
        with contextlib.suppress(pytest.skip.Exception):
            self._ahead[module, store] = self.launch(module, store)

    def take(self, module: str, store: str) -> Launched:
        ahead = self._ahead.pop((module, store), None)
        return ahead if ahead is not None else self.launch(module, store)

    def close(self) -> None:
        for launched in self._ahead.values():
            launched.server.stop()
            drop_store(launched.store, launched.url)
        self._ahead.clear()


def started(launched: Launched, then: Callable[[], None]) -> Iterator[Example]:
    """The example serving (``then`` is called once it does), stopped and cleaned after."""
    module, store, url, workdir = launched.module, launched.store, launched.url, launched.workdir
    example: Example | None = None
    try:
        example = Example(module, store, url, workdir, healthy(launched.server))
        example.spare = launch_example(module, url, workdir)
        then()
        yield example
    finally:
        if example is not None:
            example.stop()
            if store == "redis":
                for tenant in example.tenants:
                    run_sync(lambda t=tenant: redis_service.delete_prefixed(f"retrysafe:idem:{t}:"))
        drop_store(store, url)


def selected_examples(session: pytest.Session) -> list[tuple[str, str]]:
    """The (module, store) pairs the session's selected tests use, in the order they run."""
    order: list[tuple[str, str]] = []
    for item in session.items:
        callspec = getattr(item, "callspec", None)
        param = None if callspec is None else callspec.params.get("example")
        if param is not None and tuple(param) not in order:
            order.append(tuple(param))
    return order


@pytest.fixture(scope="session")
def launcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    launcher = Launcher(tmp_path_factory)
    try:
        yield launcher
    finally:
        launcher.close()


@pytest.fixture(scope="module", params=EXAMPLES_AND_STORES)
def example(request: pytest.FixtureRequest, launcher: Launcher) -> Iterator[Example]:
    module, store = request.param
    order = selected_examples(request.session)

    def start_the_next() -> None:
        if (module, store) in order[:-1]:
            launcher.start_ahead(*order[order.index((module, store)) + 1])

    yield from started(launcher.take(module, store), start_the_next)
