"""``retrysafe provider`` as a real process for tests: start, wait for health, read /stats."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from server_process import clean_env, free_port

CLI = (sys.executable, "-m", "retrysafe")


@dataclass
class ProviderProcess:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def checks_run(self) -> int:
        response = httpx.get(f"{self.url}/stats", timeout=5)
        assert response.status_code == 200, response.text
        count: int = response.json()["checks_run"]
        return count

    def wait_healthy(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"provider exited with {self.process.returncode}:\n{self.log()}"
                )
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"provider not healthy within {timeout} s:\n{self.log()}")

    def wait_for_checks(self, count: int, timeout: float = 20) -> None:
        """Poll /stats until the provider has started ``count`` checks."""
        deadline = time.monotonic() + timeout
        while self.checks_run() < count:
            assert time.monotonic() < deadline, f"the provider never started check {count}"
            time.sleep(0.02)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


def start_provider(cwd: Path, *args: str, env_passthrough: tuple[str, ...] = ()) -> ProviderProcess:
    """``retrysafe provider --port PORT ARGS``, healthy on return.

    The environment is cleaned of ``RETRYSAFE_*`` except the names in ``env_passthrough``.
    """
    port = free_port()
    log_path = cwd / f"provider-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*CLI, "provider", "--port", str(port), *args],
            cwd=cwd,
            env=clean_env({name: os.environ[name] for name in env_passthrough}),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    provider = ProviderProcess(process, port, log_path)
    try:
        provider.wait_healthy()
    except BaseException:
        provider.stop()
        raise
    return provider
