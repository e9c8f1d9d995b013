"""Fixtures for the client tests: the client flavour, and real servers behind a fault proxy.

The live fixtures start ``python -m retrysafe serve`` as a subprocess on a
free loopback port with its own SQLite file, create an API key with
``retrysafe keys create`` (its secret is the last line of stdout, SPEC §5),
and wait for ``GET /health``. One server serves the whole session; the
rate-limit test gets a second one started with a low ``--rate-limit``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Self

import httpx
import pytest
from tests.server_process import ServerProcess, run_cli
from tests.server_process import start_server as start_process
from tests.support.fault_proxy import FaultProxy

from retrysafe import AsyncClient, Client
from retrysafe.client._retry import RetryPolicy, RetrySettings

from ._helpers import AnyClient

SRC = Path(__file__).resolve().parents[2] / "src"
STARTUP_SECONDS = 30.0


def subprocess_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETRYSAFE_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    return env


@dataclass
class LiveServer:
    """A ``retrysafe serve`` process and one API key of a dedicated organization."""

    process: ServerProcess
    directory: Path
    database_url: str
    api_key: str = ""

    @property
    def port(self) -> int:
        return self.process.port

    @property
    def url(self) -> str:
        return self.process.base_url

    def run_cli(self, *args: str) -> str:
        """``retrysafe ARGS --database <this server's>``; its stdout (the test fails otherwise)."""
        result = run_cli(*args, "--database", self.database_url, cwd=self.directory)
        if result.returncode != 0:
            pytest.fail(f"retrysafe {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def create_key(self, org: str) -> str:
        return self.run_cli("keys", "create", "--org", org).strip().splitlines()[-1].strip()

    def stop(self) -> None:
        self.process.stop(timeout=10)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_server(directory: Path, *extra_args: str, port: int | None = None) -> LiveServer:
    """``retrysafe serve`` on ``directory``'s database, healthy, with a fresh API key.

    ``port`` restarts a server where it was (same directory, same database).
    """
    directory.mkdir(parents=True, exist_ok=True)
    database_url = f"sqlite:///{(directory / 'retrysafe.db').resolve()}"
    args = ["--host", "127.0.0.1", "--database", database_url]
    args += ["--document-dir", str(directory / "documents"), *extra_args]
    process = start_process(args, cwd=directory, port=port)
    server = LiveServer(process, directory, database_url)
    try:
        process.wait_healthy(timeout=STARTUP_SECONDS)
    except BaseException:
        server.stop()
        raise
    server.api_key = server.create_key(f"client-tests-{uuid.uuid4().hex[:8]}")
    return server


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server with a rate limit high enough never to interfere."""
    with start_server(tmp_path_factory.mktemp("server"), "--rate-limit", "10000/second") as server:
        yield server


@pytest.fixture(scope="session")
def throttled_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server that allows 3 requests per second per API key."""
    with start_server(tmp_path_factory.mktemp("throttled"), "--rate-limit", "3/second") as server:
        yield server


@pytest.fixture(params=["sync", "async"])
def flavor(request: pytest.FixtureRequest) -> str:
    """Every test that takes this runs once with ``Client`` and once with ``AsyncClient``."""
    return str(request.param)


@pytest.fixture
def proxy(live_server: LiveServer) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", live_server.port) as fault_proxy:
        yield fault_proxy


@pytest.fixture
def relayed(
    connect: Callable[..., AnyClient], proxy: FaultProxy, live_server: LiveServer
) -> Callable[..., AnyClient]:
    """``relayed(**options)`` → a client of this test's flavour to ``live_server`` via ``proxy``."""

    def build(**options: Any) -> AnyClient:
        return connect(proxy.url, live_server.api_key, **options)

    return build


def fast_policy(settings: RetrySettings) -> RetryPolicy:
    """The real policy with a shorter backoff, so fault tests spend milliseconds waiting."""
    return RetryPolicy(replace(settings, initial_backoff=0.05, max_backoff=0.2))


@pytest.fixture
async def connect(flavor: str) -> AsyncIterator[Callable[..., AnyClient]]:
    """``connect(url, api_key, **options)`` → a client of this test's flavour, closed afterwards."""
    opened: list[AnyClient] = []

    def build(base_url: str, api_key: str, **options: Any) -> AnyClient:
        options.setdefault("timeout", httpx.Timeout(10.0, connect=2.0))
        client: AnyClient
        if flavor == "sync":
            client = Client(api_key, base_url=base_url, **options)
        else:
            client = AsyncClient(api_key, base_url=base_url, **options)
        client._policy_factory = fast_policy
        opened.append(client)
        return client

    yield build
    for client in opened:
        if isinstance(client, Client):
            client.close()
        else:
            await client.aclose()
