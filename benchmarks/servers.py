"""Start the servers under test as real processes on loopback, and stop them.

Three kinds: the bare FastAPI baseline (``bare_app.py``), the peer middleware in
front of that same handler (``peer_app.py``), and ``retrysafe serve``. Each runs
in its own process group so stopping it reaches uvicorn's worker processes too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import proc

HERE = Path(__file__).resolve().parent
STARTUP_SECONDS = 60
RATE_LIMIT = "1000000/second"
"""High enough that the limiter runs on every request but never answers 429."""

UVICORN_FLAGS = (
    "--loop",
    "uvloop",
    "--http",
    "httptools",
    "--log-level",
    "warning",
    "--no-access-log",
)
"""The same uvicorn settings ``retrysafe serve`` uses, for the baseline and the peer."""


@dataclass(frozen=True)
class ServerSpec:
    """What to start: ``kind`` is bare, peer or retrysafe."""

    kind: str
    database: str = "sqlite"
    workers: int = 1
    log_level: str = "warning"
    """retrysafe's ``--log-level``: ``warning`` filters the per-request line out."""
    api_log: bool = True
    """False runs retrysafe with ``--api-log-retention 0`` (no API-log entries)."""


@dataclass
class RunningServer:
    process: subprocess.Popen[bytes]
    port: int
    api_key: str
    log_path: Path
    argv: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pids(self) -> list[int]:
        """The server process and every process below it (uvicorn's workers)."""
        return [self.process.pid, *proc.descendants(self.process.pid)]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def retrysafe_cli() -> list[str]:
    return [sys.executable, "-m", "retrysafe"]


def create_api_key(database_url: str) -> str:
    """A key of the organization ``bench`` (the CLI creates and migrates the database)."""
    created = subprocess.run(
        [*retrysafe_cli(), "keys", "create", "--org", "bench", "--database", database_url],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env=_clean_env(),
    )
    return created.stdout.strip().splitlines()[-1]


def command(spec: ServerSpec, port: int, database_url: str) -> list[str]:
    """The server's command line; ``python`` stands for this interpreter."""
    if spec.kind in ("bare", "peer"):
        app = f"{spec.kind}_app:app"
        return ["python", "-m", "uvicorn", app, "--port", str(port), *UVICORN_FLAGS]
    argv = ["python", "-m", "retrysafe", "serve", "--port", str(port)]
    argv += ["--database", database_url, "--rate-limit", RATE_LIMIT, "--log-level", spec.log_level]
    if not spec.api_log:
        argv += ["--api-log-retention", "0"]
    if spec.workers > 1:
        argv += ["--workers", str(spec.workers)]
    return argv


@contextlib.contextmanager
def serving(
    spec: ServerSpec,
    *,
    workdir: Path,
    database_url: str,
    env: dict[str, str] | None = None,
    api_key: str | None = None,
) -> Iterator[RunningServer]:
    """Start ``spec`` on a free port, wait until /health answers, stop it on exit.

    ``database_url`` is a ``sqlite:///path`` or ``postgresql://`` URL; the bare app
    and the peer take the SQLite path only. retrysafe gets a new API key unless
    ``api_key`` is given.
    """
    if api_key is None:
        api_key = create_api_key(database_url) if spec.kind == "retrysafe" else ""
    port = free_port()
    argv = command(spec, port, database_url)
    extra = dict(env or {})
    if spec.kind != "retrysafe":
        extra["BARE_DB"] = database_url.removeprefix("sqlite:///")
    log_path = workdir / f"{spec.kind}-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, *argv[1:]],
            cwd=HERE,
            env=_clean_env(extra),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = RunningServer(process, port, api_key, log_path, argv)
    try:
        _wait_healthy(server, spec.workers)
        yield server
    finally:
        _stop(process)


def _clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    # A RETRYSAFE_* variable in the caller's shell would silently change the server.
    env = {key: value for key, value in os.environ.items() if not key.startswith("RETRYSAFE_")}
    env.update(extra or {})
    return env


def _wait_healthy(server: RunningServer, workers: int = 1) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}:\n{server.log()}")
        try:
            # An http:// URL we built ourselves, never a user-given scheme.
            with urllib.request.urlopen(f"{server.url}/health", timeout=2):  # noqa: S310
                pass
        except OSError:
            time.sleep(0.2)
            continue
        # /health answers as soon as one worker listens. The kernel spreads
        # connections only over the sockets listening when they arrive, and wrk's
        # keep-alive connections stay where they land: wait for every worker.
        if proc.listening_sockets(server.port) >= workers:
            return
        time.sleep(0.1)
    raise RuntimeError(f"server not healthy within {STARTUP_SECONDS} s:\n{server.log()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
