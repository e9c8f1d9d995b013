"""``retrysafe provider`` as a real process for tests: start, wait for health, read /stats."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import httpx

from server_process import ServerProcess, free_port, spawn


@dataclass
class ProviderProcess(ServerProcess):
    """A ``retrysafe provider`` process; :meth:`stop` SIGKILLs it (nothing of it must survive)."""

    what: ClassVar[str] = "provider"
    healthy_within: ClassVar[float] = 20
    poll_every: ClassVar[float] = 0.05

    @property
    def url(self) -> str:
        return self.base_url

    def checks_run(self) -> int:
        response = httpx.get(f"{self.url}/stats", timeout=5)
        assert response.status_code == 200, response.text
        count: int = response.json()["checks_run"]
        return count

    def wait_for_checks(self, count: int, timeout: float = 20) -> None:
        """Poll /stats until the provider has started ``count`` checks."""
        deadline = time.monotonic() + timeout
        while self.checks_run() < count:
            assert time.monotonic() < deadline, f"the provider never started check {count}"
            time.sleep(0.02)

    def stop(self, timeout: float = 15) -> int:
        self.kill()
        return self.process.returncode


def start_provider(cwd: Path, *args: str, env_passthrough: tuple[str, ...] = ()) -> ProviderProcess:
    """``retrysafe provider --port PORT ARGS``, healthy on return.

    The environment is cleaned of ``RETRYSAFE_*`` except the names in ``env_passthrough``.
    """
    port = free_port()
    log_path = cwd / f"provider-{port}.log"
    env = {name: os.environ[name] for name in env_passthrough}
    process = spawn(["provider", "--port", str(port), *args], cwd=cwd, env=env, log_path=log_path)
    provider = ProviderProcess(process, port, log_path)
    try:
        provider.wait_healthy()
    except BaseException:
        provider.stop()
        raise
    return provider
