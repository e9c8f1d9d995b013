"""Shared fixtures: the real app under uvicorn on a loopback port, with a real database.

``live_server`` is a factory: ``live_server(rate_limit="5/minute")`` starts
``create_app(Settings(...))`` in a background thread and returns a
:class:`LiveServer`. ``server``, ``api_key`` and ``http`` are the usual trio on
top of it. The database comes from the ``database_url`` fixture (a SQLite file
in ``tmp_path``); override or parametrize that fixture to run the same tests on
PostgreSQL.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import pytest
import structlog
from tests.support import postgres
from tests.support.sync import run_sync
from tests.support.uvicorn_thread import UvicornThread, start_uvicorn

from retrysafe.database import Database
from retrysafe.database.migrate import upgrade
from retrysafe.integrations.uvicorn import JoinedWritesProtocol
from retrysafe.service import admin
from retrysafe.service.api_keys import ALL_SCOPES
from retrysafe.service.app import create_app
from retrysafe.settings import Settings

if TYPE_CHECKING:
    from tests.server_process import ServerProcess

T = TypeVar("T")

TEST_SETTINGS = Settings(
    # High enough that only tests about rate limiting ever meet a 429.
    rate_limit="100000/second",
    purge_interval=3600.0,
)
"""Defaults of every test server; ``database_url`` and ``document_dir`` are set per test."""


def with_database(url: str, action: Callable[[Database], Awaitable[T]]) -> T:
    """``action(db)`` on a short-lived :class:`Database` for ``url``."""

    async def run() -> T:
        db = Database(url)
        try:
            return await action(db)
        finally:
            await db.dispose()

    return run_sync(run)


def migrate(url: str) -> None:
    with_database(url, upgrade)


def new_api_key(
    database_url: str, org: str = "acme", scopes: list[str] | tuple[str, ...] | None = None
) -> str:
    """A fresh API key (the presented secret) for ``org`` on ``database_url``, created if absent."""
    chosen = tuple(scopes) if scopes is not None else ALL_SCOPES

    async def create(db: Database) -> tuple[str, str]:
        return await admin.create_api_key(db, org, scopes=chosen)

    return with_database(database_url, create)[1]


@dataclass
class LiveServer:
    """One running ``create_app`` server and helpers acting on its database."""

    settings: Settings
    database_url: str
    _running: UvicornThread = field(repr=False)

    @property
    def url(self) -> str:
        """Base URL without a trailing slash, e.g. ``http://127.0.0.1:54321``."""
        return self._running.url

    @property
    def api_url(self) -> str:
        return self.url + "/api/v1"

    def on_database(self, action: Callable[[Database], Awaitable[T]]) -> T:
        """Run ``action(db)`` against this server's database, from sync or async tests."""
        return with_database(self.database_url, action)

    def new_key(self, org: str = "acme", scopes: list[str] | tuple[str, ...] | None = None) -> str:
        """A fresh API key (the presented secret) for ``org``, created if absent."""
        return new_api_key(self.database_url, org, scopes)

    def revoke_key(self, secret: str) -> bool:
        key_id = secret.removeprefix("rsk_").partition(".")[0]
        return with_database(self.database_url, lambda db: admin.revoke_api_key(db, key_id))

    def set_quota(self, org: str, inquiry_quota: int) -> None:
        with_database(
            self.database_url,
            lambda db: admin.create_organization(db, org, inquiry_quota=inquiry_quota),
        )

    def client(self, key: str | None, **kwargs: Any) -> httpx.Client:
        """An ``httpx.Client`` on ``/api/v1`` sending ``key`` as a Bearer token (if any)."""
        headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
        return httpx.Client(base_url=self.api_url, headers=headers, timeout=30, **kwargs)

    def stop(self) -> None:
        """Shut the server down and wait until it has (lifespan shutdown included)."""
        self._running.stop()

    def request_stop(self) -> None:
        self._running.request_stop()

    def wait_stopped(self) -> None:
        self._running.wait_stopped()


def start_server(settings: Settings, *, migrate_first: bool = True) -> LiveServer:
    """Migrate ``settings.database_url`` and serve ``create_app(settings)`` on a free port."""
    if migrate_first:
        migrate(settings.database_url)
    running = start_uvicorn(
        create_app(settings),
        http=JoinedWritesProtocol,  # as ``serve`` runs it
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    return LiveServer(
        settings=settings,
        database_url=settings.database_url,
        _running=running,
    )


def quiet_structlog() -> None:
    """Send structlog events through stdlib logging, where pytest captures them.

    structlog's default (and what ``serve`` configures) prints to stdout. In-process
    test servers log from their own threads, often just after the test that made
    the request has finished, while pytest has capture suspended to print its
    progress: the request lines landed in ``-q`` output. As stdlib records under
    ``retrysafe.*`` they are captured per test instead (warnings and errors show in
    a failure report), and the rest is dropped quietly: the NullHandler keeps
    logging's last-resort handler from printing them between tests.

    The ``retrysafe`` logger is reset too: ``serve`` run in-process builds a
    ``uvicorn.Config``, whose logging config gives it a stdout handler of its own.
    """
    retrysafe_logger = logging.getLogger("retrysafe")
    retrysafe_logger.handlers[:] = [logging.NullHandler()]
    retrysafe_logger.propagate = True
    retrysafe_logger.setLevel(logging.NOTSET)
    structlog.reset_defaults()
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.format_exc_info,
            structlog.processors.KeyValueRenderer(key_order=["event"]),
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )


quiet_structlog()  # for what runs before the first test's fixtures, such as collection


@pytest.fixture(autouse=True)
def _quiet_structlog() -> None:
    """Every test starts quiet, even after one that ran ``serve`` in-process."""
    quiet_structlog()


@pytest.fixture(autouse=True)
def _unfrozen_heap() -> Iterator[None]:
    """What a test's app froze at its start-up (``RetrySafe``, ``serve``) is collectable again.

    A server freezes its heap once; the suite starts hundreds of apps in one process,
    and each freeze would keep everything alive then out of collection for good. The
    collection thresholds the freeze raised are put back too.
    """
    thresholds = gc.get_threshold()
    yield
    if gc.get_freeze_count():
        gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """The database every server of a test shares; override it to test another backend."""
    return f"sqlite:///{tmp_path / 'retrysafe.db'}"


@pytest.fixture
async def sqlite_database(tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated SQLite database, the file ``tmp_path / "migrated.db"``, disposed afterwards."""
    db = Database(f"sqlite:///{tmp_path / 'migrated.db'}")
    await upgrade(db)
    yield db
    await db.dispose()


DATABASE_BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
"""The SQL databases a test runs on; PostgreSQL skips when unreachable (fails under CI=true)."""


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A new, empty PostgreSQL database, dropped afterwards."""
    with postgres.new_database_sync() as url:
        yield url


@pytest.fixture(params=DATABASE_BACKENDS)
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database with no schema yet, on each of SQLite and PostgreSQL (the test runs twice)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'retrysafe.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture(scope="session")
def _stopping_servers() -> Iterator[list[LiveServer]]:
    """Servers whose shutdown was requested; joined once, at the end of the session.

    uvicorn takes ~0.2 s to stop (a 0.1 s tick, then a 0.1 s grace for
    connections); letting that overlap the next test instead of waiting for it
    keeps the suite fast. Tests that need a server gone call ``stop()`` themselves.
    """
    servers: list[LiveServer] = []
    yield servers
    for server in servers:
        server.wait_stopped()


@pytest.fixture
def live_server(
    database_url: str, tmp_path: Path, _stopping_servers: list[LiveServer]
) -> Iterator[Callable[..., LiveServer]]:
    """Factory: ``live_server(migrate=True, **settings_overrides) -> LiveServer``.

    Overrides are :class:`Settings` fields; by default the server uses the
    ``database_url`` fixture, documents under ``tmp_path / "documents"`` and a
    rate limit no ordinary test reaches. Every server started is stopped at teardown.
    """
    servers: list[LiveServer] = []

    def start(*, migrate: bool = True, **overrides: Any) -> LiveServer:
        settings = replace(
            TEST_SETTINGS,
            **{
                "database_url": database_url,
                "document_dir": tmp_path / "documents",
                **overrides,
            },
        )
        server = start_server(settings, migrate_first=migrate)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.request_stop()
    _stopping_servers.extend(servers)


@pytest.fixture
def processes() -> Iterator[list[ServerProcess]]:
    """Server and provider processes a test starts: every one is SIGKILLed at teardown.

    A test that needs a clean shutdown (SIGTERM) calls ``stop()`` itself.
    """
    started: list[ServerProcess] = []
    yield started
    for process in started:
        process.kill()


@pytest.fixture
def server(live_server: Callable[..., LiveServer]) -> LiveServer:
    """A server with the test defaults."""
    return live_server()


@pytest.fixture
def api_key(server: LiveServer) -> str:
    """A key with every scope for the organization ``acme``."""
    return server.new_key()


@pytest.fixture
def http(server: LiveServer, api_key: str) -> Iterator[httpx.Client]:
    """``httpx.Client`` on ``server.url + "/api/v1"`` authenticated with ``api_key``."""
    with server.client(api_key) as client:
        yield client
