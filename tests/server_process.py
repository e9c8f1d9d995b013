"""Run the ``retrysafe`` command line and ``retrysafe serve`` as real processes in tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Self

import httpx
from tests.support.throwaway import free_port

__all__ = ["CLI", "ServerProcess", "clean_env", "free_port", "run_cli", "spawn", "start_server"]

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


def spawn(
    args: Sequence[str], *, cwd: Path, env: Mapping[str, str], log_path: Path
) -> subprocess.Popen[bytes]:
    """``retrysafe ARGS`` in its own process group, stdout and stderr into ``log_path``."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [*CLI, *args],
            cwd=cwd,
            env=clean_env(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            # Its own group, so kill() and stop() reach uvicorn's worker processes too.
            start_new_session=True,
        )


@dataclass
class ServerProcess:
    """A ``retrysafe serve`` process in its own process group, logging to a file."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    what: ClassVar[str] = "server"
    """How failures name it."""
    healthy_within: ClassVar[float] = 30
    poll_every: ClassVar[float] = 0.1

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_healthy(self, timeout: float | None = None) -> None:
        """Poll ``/health`` until it answers 200; fail with the process's log otherwise."""
        timeout = self.healthy_within if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"{self.what} exited with {self.process.returncode}:\n{self.log()}"
                )
            try:
                if httpx.get(f"{self.base_url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(self.poll_every)
        raise AssertionError(f"{self.what} not healthy within {timeout} s:\n{self.log()}")

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

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


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
    process = spawn(["serve", *port_args, *args], cwd=cwd, env=env, log_path=log_path)
    return ServerProcess(process, port, log_path)
