"""Start the servers under test as real processes on loopback, and stop them.

The kinds: the anchors (``../shared/bench/anchor_sqlite.py`` and
``anchor_postgres.py``, started exactly as their README says), the old bare
FastAPI baseline (``bare_app.py``, informational), a peer package or
retrysafe's pipeline (``peer_app.py``, ``library_app.py``) in front of the
anchor's own app, and ``retrysafe serve``. Each runs in its own process group
so stopping it reaches uvicorn's worker processes too.
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
ANCHOR_DIR_ENV = "BENCH_ANCHOR_DIR"
ANCHOR_KINDS = ("anchor_sqlite", "anchor_postgres")
APP_KINDS = ("bare", "peer", "library")
"""Apps in benchmarks/ started with uvicorn; peer and library import the SQLite anchor."""


class AnchorsMissing(RuntimeError):
    """The shared anchors (``shared/bench/anchor_*.py``) are not where they should be."""


def anchor_dir() -> Path:
    """``shared/bench`` beside the repository (or a parent of it), or ``$BENCH_ANCHOR_DIR``.

    The anchors are the project's shared baselines: they are used where they are,
    never copied into the repository, so every row measures the same files.
    """
    configured = os.environ.get(ANCHOR_DIR_ENV)
    candidates = (
        [Path(configured)]
        if configured
        else [parent / "shared" / "bench" for parent in HERE.parents]
    )
    for candidate in candidates:
        if (candidate / "anchor_sqlite.py").is_file():
            return candidate
    raise AnchorsMissing(
        "the anchors (shared/bench/anchor_sqlite.py) were not found beside the repository; "
        f"set {ANCHOR_DIR_ENV}"
    )


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
    """What to start: ``kind`` is anchor_sqlite, anchor_postgres, bare, peer, library, retrysafe."""

    kind: str
    database: str = "sqlite"
    workers: int = 1
    log_level: str = "warning"
    """retrysafe's ``--log-level``: ``warning`` filters the per-request line out."""
    api_log: bool = True
    """False runs retrysafe with ``--api-log-retention 0`` (no API-log entries)."""
    sqlite_synchronous: str | None = None
    """retrysafe's ``--sqlite-synchronous`` (None: the default, ``full``)."""
    variant: str = ""
    """The peer package (``PEER``) or the library row's store (``LIB_STORE``)."""


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


def migrate(database_url: str) -> None:
    """Create and migrate a retrysafe database (the library rows' SQLite store)."""
    subprocess.run(
        [*retrysafe_cli(), "migrate", "--database", database_url],
        capture_output=True,
        check=True,
        timeout=120,
        env=_clean_env(),
    )


def command(spec: ServerSpec, port: int, database_url: str) -> list[str]:
    """The server's command line; ``python`` stands for this interpreter."""
    if spec.kind in ANCHOR_KINDS:
        # As ../shared/bench/README.md starts them.
        app = f"{spec.kind}:app"
        argv = [
            "python", "-m", "uvicorn", app, "--app-dir", str(anchor_dir()),
            "--port", str(port), *UVICORN_FLAGS,
        ]  # fmt: skip
        if spec.workers > 1:
            # Informational rows only: the same app in N processes. At info each worker
            # logs its start-up (the access log stays off), which is how its readiness shows.
            argv[argv.index("warning")] = "info"
            argv += ["--workers", str(spec.workers)]
        return argv
    if spec.kind in APP_KINDS:
        app = f"{spec.kind}_app:app"
        return ["python", "-m", "uvicorn", app, "--port", str(port), *UVICORN_FLAGS]
    argv = ["python", "-m", "retrysafe", "serve", "--port", str(port)]
    argv += ["--database", database_url, "--rate-limit", RATE_LIMIT, "--log-level", spec.log_level]
    if not spec.api_log:
        argv += ["--api-log-retention", "0"]
    if spec.sqlite_synchronous is not None:
        argv += ["--sqlite-synchronous", spec.sqlite_synchronous]
    if spec.workers > 1:
        argv += ["--workers", str(spec.workers)]
    return argv


def environment(spec: ServerSpec, database_url: str) -> dict[str, str]:
    """The variables a server of ``spec`` reads its database (and peer or store) from."""
    if spec.kind == "retrysafe":
        return {}
    if spec.kind == "anchor_postgres":
        return {"PERF_PG": database_url}
    path = database_url.removeprefix("sqlite:///")
    env = {"PERF_DB": path, "BARE_DB": path}
    if spec.kind in ("peer", "library"):
        env["PYTHONPATH"] = os.pathsep.join(
            [str(anchor_dir()), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
    if spec.kind == "peer":
        env["PEER"] = spec.variant
    return env


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

    ``database_url`` is a ``sqlite:///path`` or ``postgresql://`` URL (the anchor
    on PostgreSQL takes the latter, the other apps the SQLite path). retrysafe
    gets a new API key unless ``api_key`` is given; the others ignore the key,
    except the library app, which is told the one it accepts.
    """
    if api_key is None:
        api_key = create_api_key(database_url) if spec.kind == "retrysafe" else "bench-key"
    port = free_port()
    argv = command(spec, port, database_url)
    extra = {**environment(spec, database_url), **(env or {})}
    if spec.kind == "library":
        extra["BENCH_KEY"] = api_key
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
        _wait_healthy(
            server, spec.workers, shared_socket=spec.kind in ANCHOR_KINDS and spec.workers > 1
        )
        yield server
    finally:
        _stop(process)


def _clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    # A RETRYSAFE_* variable in the caller's shell would silently change the server.
    env = {key: value for key, value in os.environ.items() if not key.startswith("RETRYSAFE_")}
    env.update(extra or {})
    return env


def _wait_healthy(server: RunningServer, workers: int = 1, *, shared_socket: bool = False) -> None:
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
        # uvicorn's own --workers share the parent's one socket instead: each has
        # started when it logged so.
        if shared_socket:
            if server.log().count("Application startup complete") >= workers:
                return
        elif proc.listening_sockets(server.port) >= workers:
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
