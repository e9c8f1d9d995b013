"""Schemathesis against the real server over loopback: every phase, every check, zero failures.

The run covers the examples, coverage, fuzzing and stateful phases (the stateful
one follows the document's links from each create to its resource) with all
checks, including ``object_level_authorization`` between two organizations and
the envelope check of ``schemathesis_hooks.py``. Generation is deterministic and
bounded (``schemathesis.toml``), so CI sees the same cases on every run.

To run it by hand against a server of your own::

    RETRYSAFE_FUZZ_AUTH=auth.json PYTHONPATH=. st --config-file tests/fuzz/schemathesis.toml \\
        run http://127.0.0.1:8000/openapi.json
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.conftest import LiveServer
from tests.service.conftest import database_url, postgres_copies  # noqa: F401

HERE = Path(__file__).parent
REPOSITORY = HERE.parent.parent
CONFIG = HERE / "schemathesis.toml"
RUN_TIMEOUT = 600
"""A hung run fails the test; a normal one takes well under a minute."""

PEERS = ("acme", "globex")
"""Two organizations: each one's objects are replayed as the other by the BOLA check."""


def write_auth(path: Path, keys: dict[str, str]) -> Path:
    """A Web Fuzzing Commons auth document: one fixed Authorization header per user."""
    users = [
        {"name": name, "fixedHeaders": [{"name": "Authorization", "value": f"Bearer {key}"}]}
        for name, key in keys.items()
    ]
    path.write_text(json.dumps({"auth": users}))
    return path


def test_the_api_survives_schemathesis(
    live_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    """No 5xx, every 4xx an envelope, every answer as documented, no object across organizations."""
    # ignored_auth resends many requests with wrong keys: no address block for the fuzzer.
    server = live_server(auth_failure_limit="100000/second")
    auth = write_auth(tmp_path / "auth.json", {org: server.new_key(org) for org in PEERS})
    env = {
        **os.environ,
        "RETRYSAFE_FUZZ_AUTH": str(auth),
        # The hooks module is imported by name from the repository root.
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(REPOSITORY), os.environ.get("PYTHONPATH")])
        ),
        "NO_COLOR": "1",
    }
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(CONFIG),
        "run",
        f"{server.url}/openapi.json",
        "--no-color",
    ]
    started = time.monotonic()
    result = subprocess.run(
        command,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    summary = re.search(r"(\d+) generated, .*", output)
    print(f"schemathesis: {summary.group(0) if summary else '?'} in {elapsed:.1f} s")
    assert result.returncode == 0, output
    assert summary is not None, output
    assert int(summary.group(1)) > 0, output
    # Every phase ran: a silently skipped stateful phase would prove nothing about links.
    for phase in ("Coverage", "Fuzzing", "Stateful"):
        assert re.search(rf"✅\s+{phase}", output), f"{phase} did not pass:\n{output}"
