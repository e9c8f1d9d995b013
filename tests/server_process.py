"""Run the ``retrysafe`` command line and ``retrysafe serve`` as real processes in tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

CLI = (sys.executable, "-m", "retrysafe")


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without any ``RETRYSAFE_*`` leaking in from the shell."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("RETRYSAFE_")}
    env.update(extra or {})
    return env


def run_cli(
    *args: str, cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``retrysafe ARGS`` to completion; a hang (say, serve starting) fails the test."""
    return subprocess.run(
        [*CLI, *args],
        cwd=cwd,
        env=clean_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    """A ``retrysafe serve`` process in its own process group, logging to a file."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_healthy(self, timeout: float = 30) -> None:
        """Poll ``/health`` until it answers 200; fail with the server log otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.base_url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"server not healthy within {timeout} s:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL the whole group at once: no shutdown code runs, as in a crash."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM and wait for a clean exit; SIGKILL if it does not come."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode


def start_server(
    args: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    port: int | None = None,
    port_from_env: bool = False,
) -> ServerProcess:
    """Start ``retrysafe serve ARGS --port PORT``; the caller waits for health and stops it.

    With ``port_from_env`` the port is given as ``RETRYSAFE_PORT`` instead of a flag.
    """
    port = free_port() if port is None else port
    env = dict(env or {})
    port_args: list[str] = []
    if port_from_env:
        env["RETRYSAFE_PORT"] = str(port)
    else:
        port_args = ["--port", str(port)]
    log_path = cwd / f"serve-{port}-{time.monotonic_ns()}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*CLI, "serve", *port_args, *args],
            cwd=cwd,
            env=clean_env(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            # Its own group, so kill() and stop() reach uvicorn's worker processes too.
            start_new_session=True,
        )
    return ServerProcess(process, port, log_path)
