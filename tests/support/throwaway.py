"""PostgreSQL and Redis servers that a test starts, stops, kills and restarts itself.

The shared services on 5432/6379 must never go down under other tests, so tests
about outages run their own instance: its own data directory under a temporary
directory, its own free port on 127.0.0.1, trust authentication, no persistence
beyond what the test needs. Every method is synchronous and bounded by a
timeout; call them from async tests too (each takes well under a second, except
``initdb`` at the first ``start()`` of a :class:`ThrowawayPostgres`).

Usage::

    with ThrowawayPostgres() as pg:   # initdb + start
        url = pg.url()                # postgresql://postgres@127.0.0.1:PORT/postgres
        pg.stop()                     # clean, fast shutdown
        pg.start()                    # same port, same data
        pg.kill()                     # SIGKILL every process of the server, as in a crash

    with ThrowawayRedis() as redis:
        redis.url                     # redis://127.0.0.1:PORT/0
        redis.stop(); redis.start()   # no data survives a restart (--save "")

PostgreSQL refuses to run as root, and this machine's tests do run as root, so
``initdb`` and ``postgres`` run as the ``postgres`` OS user (``Popen(user=...)``,
no ``su``/``runuser`` process in between, so the pid we hold is the postmaster's).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Self

import pytest

READY_TIMEOUT = 30.0
"""Seconds a server may take to accept connections after ``start()``."""

STOP_TIMEOUT = 15.0
"""Seconds a clean shutdown may take before the server is killed instead."""

POSTGRES_OS_USER = "postgres"


def free_port() -> int:
    """A port nothing listens on right now (the server binds it a moment later).

    Under pytest-xdist the ports are dealt out among the workers, so two workers never
    pick the same port in the moment between choosing it and their servers binding it.
    Linux hands out only odd ports for ``bind(("127.0.0.1", 0))`` while it can, so
    they are dealt by ``port // 2``, not by ``port`` itself.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    for _ in range(1000):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if (port // 2) % workers == worker % workers:
            return port
    raise RuntimeError(f"no free port for xdist worker {worker} of {workers}")  # pragma: no cover


def postgres_bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/*/bin`` holding ``initdb``, else ``initdb`` on PATH."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: int(Path(path).parts[-3]) if Path(path).parts[-3].isdigit() else 0,
    )
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def postgres_skip_reason() -> str | None:
    """Why a throwaway PostgreSQL cannot run here, or ``None`` when it can."""
    if postgres_bin_dir() is None:
        return "PostgreSQL binaries (initdb, postgres) are not installed"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(POSTGRES_OS_USER)
        except KeyError:
            return f"running as root and there is no {POSTGRES_OS_USER!r} OS user for PostgreSQL"
    return None


def redis_skip_reason() -> str | None:
    """Why a throwaway Redis cannot run here, or ``None`` when it can."""
    return None if shutil.which("redis-server") else "redis-server is not installed"


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{_tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.02)
    raise RuntimeError(f"{what} did not listen on port {port} within {READY_TIMEOUT} s")


def _tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _terminate(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Send ``sig`` to the server's process group and wait; SIGKILL if it will not go."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=STOP_TIMEOUT)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    # The group may still hold children (PostgreSQL backends) after its leader
    # exited, so the signal goes to the group even when poll() says it is gone.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=STOP_TIMEOUT)


class _ThrowawayServer:
    """What a throwaway server shares: its directory, its process group and its lifecycle.

    A subclass writes ``start()`` (idempotent while running) and ``stop()`` (clean);
    ``kill()`` SIGKILLs the whole process group, and ``close()`` also deletes the
    directory when it was made here.
    """

    def __init__(self, base_dir: Path | None, prefix: str, port: int | None) -> None:
        self._owns_dir = base_dir is None
        self.dir = Path(tempfile.mkdtemp(prefix=prefix)) if base_dir is None else base_dir
        self.port = free_port() if port is None else port
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        raise NotImplementedError

    def kill(self) -> None:
        """SIGKILL the server and every process it started; ``start()`` then recovers."""
        if self._process is not None:
            _kill_group(self._process)

    def close(self) -> None:
        """Kill the server and delete its directory."""
        self.kill()
        if self._owns_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class ThrowawayPostgres(_ThrowawayServer):
    """A PostgreSQL server of our own: ``initdb`` into a temporary directory, one port.

    ``fsync`` is off: the data only has to survive a clean ``stop()`` or a
    ``kill()`` of the server processes, not a power cut of the machine; a
    commit is still written to the OS before it is acknowledged. (Never turn
    ``synchronous_commit`` off here: a kill would then lose acknowledged commits,
    and the crash tests would rightly fail.)
    """

    def __init__(self, base_dir: Path | None = None, *, port: int | None = None) -> None:
        bin_dir = postgres_bin_dir()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL binaries are not installed")
        super().__init__(base_dir, "retrysafe-pg-", port)
        self._bin = bin_dir
        self.data_dir = self.dir / "data"
        self.log_path = self.dir / "postgres.log"
        self._as_user = POSTGRES_OS_USER if os.geteuid() == 0 else None

    def url(self, database: str = "postgres") -> str:
        """A ``postgresql://`` URL for ``database`` on this server (user ``postgres``)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """Start the server (running ``initdb`` first, once) and wait until it listens."""
        if self.running:
            return
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [
                    str(self._bin / "postgres"),
                    "-D",
                    str(self.data_dir),
                    "-p",
                    str(self.port),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    f"unix_socket_directories={self.dir}",
                    "-c",
                    "fsync=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "max_connections=100",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                user=self._as_user,
                group=self._as_user,
                # Its own group: kill() reaches every backend, as a crash would.
                start_new_session=True,
            )
        _wait_for_port(self.port, self._process, self.log_path, "postgres")
        self._wait_accepting()

    def stop(self) -> None:
        """Fast shutdown (SIGINT): open transactions roll back, clients are disconnected."""
        if self._process is not None:
            _terminate(self._process, signal.SIGINT)
            _kill_group(self._process)

    # kill() SIGKILLs the postmaster and every backend at once. It leaves
    # postmaster.pid behind; the next start checks that its pid is gone, which it
    # is, and runs crash recovery.

    def _initdb(self) -> None:
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self._as_user is not None:
            account = pwd.getpwnam(self._as_user)
            for path in (self.dir, self.data_dir):
                os.chown(path, account.pw_uid, account.pw_gid)
        result = subprocess.run(
            [
                str(self._bin / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
            ],
            capture_output=True,
            user=self._as_user,
            group=self._as_user,
            cwd=self.dir,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{result.stdout.decode()}{result.stderr.decode()}")

    def _wait_accepting(self) -> None:
        # Listening is not yet accepting: during crash recovery connections are refused
        # with "the database system is starting up". pg_isready tells the two apart.
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            probe = subprocess.run(
                [str(self._bin / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
                capture_output=True,
                timeout=10,
                check=False,
            )
            if probe.returncode == 0:
                return
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(f"postgres exited:\n{_tail(self.log_path)}")
            time.sleep(0.05)
        raise RuntimeError(f"postgres not ready within {READY_TIMEOUT} s:\n{_tail(self.log_path)}")


class ThrowawayRedis(_ThrowawayServer):
    """A ``redis-server`` of our own: one port, one directory, nothing persisted."""

    def __init__(self, base_dir: Path | None = None, *, port: int | None = None) -> None:
        super().__init__(base_dir, "retrysafe-redis-", port)
        self.log_path = self.dir / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start ``redis-server`` on this instance's port and wait until it answers PING."""
        if self.running:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [
                    "redis-server",
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.dir),
                    "--protected-mode",
                    "no",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _wait_for_port(self.port, self._process, self.log_path, "redis-server")
        self._wait_pong()

    def stop(self) -> None:
        """SIGTERM: Redis closes every client connection and exits."""
        if self._process is not None:
            _terminate(self._process, signal.SIGTERM)

    def _wait_pong(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 1) as sock,
            ):
                sock.sendall(b"PING\r\n")
                if sock.recv(64).startswith(b"+PONG"):
                    return
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not answer PING within {READY_TIMEOUT} s")


def skip_without_postgres_binaries() -> None:
    """Skip the calling test, with the reason, when no throwaway PostgreSQL can run."""
    reason = postgres_skip_reason()
    if reason is not None:
        pytest.skip(f"throwaway PostgreSQL: {reason}")


def skip_without_redis_binary() -> None:
    """Skip the calling test, with the reason, when no throwaway Redis can run."""
    reason = redis_skip_reason()
    if reason is not None:
        pytest.skip(f"throwaway Redis: {reason}")
