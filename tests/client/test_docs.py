"""Every Python example in the README (client section) runs, as written, against a live server."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import LiveServer, subprocess_env

DOC = Path(__file__).resolve().parents[2] / "README.md"
# The client section only: server-side sketches elsewhere (a recovery-point handler)
# name the reader's own functions and are not programs.
CLIENT_SECTION = re.search(r"^## The Python client\n(.*?)^## ", DOC.read_text(), re.M | re.S)
assert CLIENT_SECTION is not None, "README lost its '## The Python client' section"
EXAMPLES = re.findall(r"```python\n(.*?)```", CLIENT_SECTION.group(1), flags=re.DOTALL)


def test_the_doc_has_examples() -> None:
    assert len(EXAMPLES) >= 6


@pytest.mark.slow
@pytest.mark.parametrize("source", EXAMPLES, ids=[f"example-{i}" for i in range(len(EXAMPLES))])
def test_example_runs(source: str, live_server: LiveServer) -> None:
    env = subprocess_env()
    env["RETRYSAFE_API_KEY"] = live_server.api_key
    env["RETRYSAFE_BASE_URL"] = live_server.url
    result = subprocess.run(
        [sys.executable, "-c", source],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
