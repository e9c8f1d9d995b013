"""The README's library section runs as written: its app, served by uvicorn, replays a create.

Its shell block's install commands are checked against the extras the project
declares; its Python block is saved as ``main.py`` and served exactly as the
comment in it says (``uvicorn main:app``), on the Redis the block names.
"""

from __future__ import annotations

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

from retrysafe.pipeline.tenancy import by_credential

from .extras_env import project_metadata

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = re.search(r"^## Retry-safe your own ASGI app\n(.*?)^## ", README.read_text(), re.M | re.S)
assert SECTION is not None, "README lost its '## Retry-safe your own ASGI app' section"
[SHELL] = re.findall(r"```sh\n(.*?)```", SECTION.group(1), flags=re.S)
[PROGRAM] = re.findall(r"```python\n(.*?)```", SECTION.group(1), flags=re.S)


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
