"""The SDK works where only httpx is installed: ``pip install retrysafe`` for a caller.

The test builds a ``site-packages`` of its own holding the client's source and
exactly the distributions httpx needs (read from their metadata), runs a fresh
interpreter on it with the system site switched off (``-S``), and drives the
real server from there. The server's frameworks are not on that path, so an
import of any of them would fail the run.
"""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from .conftest import SRC, LiveServer

pytestmark = pytest.mark.slow

SERVER_ONLY = ("fastapi", "starlette", "sqlalchemy", "uvicorn", "alembic", "limits", "redis")


def dependency_closure(root: str) -> set[str]:
    """``root`` and every installed distribution it requires (extras left out)."""
    seen: set[str] = set()
    todo = [root]
    while todo:
        name = todo.pop()
        if name.lower() in seen:
            continue
        seen.add(name.lower())
        for requirement in metadata.requires(name) or []:
            if "extra ==" in requirement:
                continue
            matched = re.match(r"[A-Za-z0-9_.-]+", requirement)
            assert matched is not None, requirement
            try:
                metadata.distribution(matched.group(0))
            except metadata.PackageNotFoundError:
                continue  # a requirement for another Python version
            todo.append(matched.group(0))
    return seen


def import_roots(distribution: str) -> set[Path]:
    """The top-level modules and packages a distribution installed."""
    dist = metadata.distribution(distribution)
    roots = set()
    for file in dist.files or []:
        top = file.parts[0]
        if top.endswith((".dist-info", ".egg-info")) or top in {"__pycache__", ".."}:
            continue
        roots.add(Path(str(dist.locate_file(top))))
    return roots


@pytest.fixture
def httpx_only_site(tmp_path: Path) -> Path:
    site = tmp_path / "site-packages"
    site.mkdir()
    for distribution in sorted(dependency_closure("httpx")):
        for root in import_roots(distribution):
            (site / root.name).symlink_to(root)
    (site / "retrysafe").symlink_to(SRC / "retrysafe")
    return site


PROGRAM = """
import importlib.util, json, sys, uuid
from retrysafe import Client

assert not any(importlib.util.find_spec(name) for name in {server_only!r}), "a server dep is here"
with Client({api_key!r}, base_url={url!r}) as client:
    reference_id = f"only-httpx-{{uuid.uuid4()}}"
    account = client.accounts.create(reference_id=reference_id)
    [listed] = client.accounts.list(reference_id=reference_id)
loaded = sorted({{name.split(".")[0] for name in sys.modules}} - set(sys.stdlib_module_names))
print(json.dumps({{"same": listed.id == account.id, "modules": loaded}}))
"""


def test_the_client_runs_with_only_httpx_installed(
    httpx_only_site: Path, live_server: LiveServer
) -> None:
    names = sorted(path.name for path in httpx_only_site.iterdir())
    assert "httpx" in names
    assert not set(SERVER_ONLY) & set(names)
    program = PROGRAM.format(
        server_only=SERVER_ONLY, api_key=live_server.api_key, url=live_server.url
    )
    result = subprocess.run(
        [sys.executable, "-S", "-c", program],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(httpx_only_site)},
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    outcome = result.stdout.strip().splitlines()[-1]
    assert '"same": true' in outcome
    assert not any(f'"{name}"' in outcome for name in SERVER_ONLY)


def test_the_servers_modules_do_not_load_there(httpx_only_site: Path) -> None:
    """The check above can fail: the server itself does not import on that path."""
    result = subprocess.run(
        [sys.executable, "-S", "-c", "import retrysafe.service.app"],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(httpx_only_site)},
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "ModuleNotFoundError" in result.stderr
