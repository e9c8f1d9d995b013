"""The example apps of ``examples/``, each served by uvicorn as a real process on loopback."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from tests.conftest import run_sync
from tests.server_process import ServerProcess, clean_env, free_port
from tests.support import redis_service

from retrysafe.pipeline.tenancy import by_credential

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
APPS = ("fastapi_app", "starlette_app", "litestar_app")
EXAMPLES_AND_STORES = [
    pytest.param(
        (app, store),
        id=f"{app}-{store}",
        marks=[pytest.mark.slow] + ([pytest.mark.redis] if store == "redis" else []),
    )
    for app in APPS
    for store in ("memory", "redis")
]
"""Every example on every store that cannot join the app's transaction."""
REQUEST_TIMEOUT = 2.0
"""The examples' deadline in these tests: a claim's lease is this + 5 s."""


def serve_example(module: str, store_url: str, workdir: Path) -> ServerProcess:
    """``uvicorn examples/MODULE:app`` on a free port, its orders in ``workdir``."""
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
    server = ServerProcess(process, port, log_path)
    try:
        server.wait_healthy(timeout=30)
    except BaseException:
        server.kill()
        raise
    return server


@dataclass
class Example:
    """One example app served for a whole module of scenarios, and its callers' credentials."""

    module: str
    store: str
    store_url: str
    workdir: Path
    server: ServerProcess
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
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def calls(self) -> int:
        """How often the create handler ran in this server process."""
        return int(httpx.get(f"{self.url}/stats", timeout=10).json()["calls"])

    def order_ids(self) -> list[str]:
        return list(httpx.get(f"{self.url}/orders", timeout=10).json()["ids"])

    def restart(self, *, crash: bool) -> None:
        """SIGKILL (``crash``) or stop the server, then serve the same app on the same files."""
        if crash:
            self.server.kill()
        else:
            self.server.stop()
        self.server = serve_example(self.module, self.store_url, self.workdir)


def store_url(store: str) -> str:
    if store == "memory":
        return "memory://"
    if not run_sync(redis_service.reachable):
        pytest.skip(redis_service.SKIP_REASON)
    return redis_service.URL


def started(module: str, store: str, workdir: Path) -> Iterator[Example]:
    url = store_url(store)
    example = Example(module, store, url, workdir, serve_example(module, url, workdir))
    try:
        yield example
    finally:
        example.server.stop()
        if store == "redis":
            for tenant in example.tenants:
                run_sync(lambda t=tenant: redis_service.delete_prefixed(f"retrysafe:idem:{t}:"))


@pytest.fixture(scope="module", params=EXAMPLES_AND_STORES)
def example(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Example]:
    module, store = request.param
    yield from started(module, store, tmp_path_factory.mktemp(f"{module}-{store}"))
