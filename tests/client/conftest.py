"""Fixtures for the client tests: the client flavour, and real servers behind a fault proxy.

The live fixtures start ``python -m retrysafe serve`` as a subprocess on a
free loopback port with its own SQLite file, create an API key with
``retrysafe keys create`` (its secret is the last line of stdout, SPEC §5),
and wait for ``GET /health``. One server serves the whole session; the
rate-limit test gets a second one started with a low ``--rate-limit``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
from tests.support.fault_proxy import FaultProxy

from retrysafe import AsyncClient, Client
from retrysafe.client._retry import RetryPolicy, RetrySettings

from ._helpers import AnyClient

SRC = Path(__file__).resolve().parents[2] / "src"
STARTUP_SECONDS = 30.0


def retrysafe_command() -> list[str]:
    """How to run the CLI from this interpreter (``__main__`` if present, else the module)."""
    if (SRC / "retrysafe" / "__main__.py").exists():
        return [sys.executable, "-m", "retrysafe"]
    return [sys.executable, "-m", "retrysafe.cli"]


def subprocess_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETRYSAFE_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class LiveServer:
    """A ``retrysafe serve`` subprocess and one API key of a dedicated organization."""

    port: int
    database_url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]
    api_key: str = ""
    keys: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def run_cli(self, *args: str) -> str:
        """``retrysafe ARGS --database <this server's>``; its stdout (the test fails otherwise)."""
        result = subprocess.run(
            [*retrysafe_command(), *args, "--database", self.database_url],
            capture_output=True,
            text=True,
            env=subprocess_env(),
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            pytest.fail(f"retrysafe {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def create_key(self, org: str) -> str:
        return self.run_cli("keys", "create", "--org", org).strip().splitlines()[-1].strip()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.log.close()


def start_server(directory: Path, *extra_args: str, port: int | None = None) -> LiveServer:
    """``retrysafe serve`` on ``directory``'s database, healthy, with a fresh API key.

    ``port`` restarts a server where it was (same directory, same database).
    """
    directory.mkdir(parents=True, exist_ok=True)
    database_url = f"sqlite:///{(directory / 'retrysafe.db').resolve()}"
    port = port or free_port()
    log_path = directory / "server.log"
    log = log_path.open("ab")
    process = subprocess.Popen(
        [
            *retrysafe_command(),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--database",
            database_url,
            "--document-dir",
            str(directory / "documents"),
            *extra_args,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=subprocess_env(),
    )
    server = LiveServer(port, database_url, process, log_path, log)
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        if process.poll() is not None:
            server.stop()
            pytest.fail(f"retrysafe serve exited with {process.returncode}:\n{server.log_text()}")
        try:
            if httpx.get(f"{server.url}/health", timeout=1.0).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            pytest.fail(f"retrysafe serve did not become healthy:\n{server.log_text()}")
        time.sleep(0.1)
    server.api_key = server.create_key(f"client-tests-{uuid.uuid4().hex[:8]}")
    return server


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server with a rate limit high enough never to interfere."""
    server = start_server(tmp_path_factory.mktemp("server"), "--rate-limit", "10000/second")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def throttled_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server that allows 3 requests per second per API key."""
    server = start_server(tmp_path_factory.mktemp("throttled"), "--rate-limit", "3/second")
    yield server
    server.stop()


@pytest.fixture(params=["sync", "async"])
def flavor(request: pytest.FixtureRequest) -> str:
    """Every test that takes this runs once with ``Client`` and once with ``AsyncClient``."""
    return str(request.param)


@pytest.fixture
def proxy(live_server: LiveServer) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", live_server.port) as fault_proxy:
        yield fault_proxy


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
