"""The system under test: a database and ``retrysafe serve`` processes the nemesis can kill.

PostgreSQL is a throwaway instance of its own (``tests/support/throwaway.py``)
so that stopping and SIGKILLing it harms nobody else; SQLite is one file the
server processes share. Servers keep their port across restarts, so the
load balancer in front of them needs no reconfiguration.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from pathlib import Path

import asyncpg
from tests.server_process import ServerProcess, free_port, run_cli, start_server
from tests.support.throwaway import ThrowawayPostgres

from .config import Backend, ChaosConfig

__all__ = ["Cluster"]

DATABASE_NAME = "chaos"
ORGANIZATION = "chaos"
START_TIMEOUT = 90.0
"""Seconds a server may take to come back, including waiting for PostgreSQL to."""


class Cluster:
    """The database and the server processes; every method blocks (call from a thread)."""

    def __init__(self, config: ChaosConfig, workdir: Path) -> None:
        self._config = config
        self._workdir = workdir
        self.ports = [free_port() for _ in range(config.servers)]
        self._servers: list[ServerProcess | None] = [None] * config.servers
        self._env = {"PYTHONPATH": str(config.server_src)} if config.server_src else {}
        self.postgres: ThrowawayPostgres | None = None
        self.database_url = ""
        self.api_key = ""
        self.events: Counter[str] = Counter()
        """What was done to the system: ``server_kill``, ``server_start``, ``postgres_stop``…"""
        self._lock = threading.Lock()
        """Kills and starts of different servers run on different threads."""

    # -- setting up ------------------------------------------------------------------

    def start(self) -> None:
        """Start the database, create the organization's key, then every server."""
        if self._config.backend is Backend.POSTGRES:
            # Its own directory: the postgres OS user must own it, which a root-owned
            # private work directory would not let it reach.
            self.postgres = ThrowawayPostgres()
            self.postgres.start()
            asyncio.run(self._create_postgres_database())
            self.database_url = self.postgres.url(DATABASE_NAME)
        else:
            self.database_url = f"sqlite:///{self._workdir / 'chaos.db'}"
        created = run_cli(
            "keys", "create", "--org", ORGANIZATION, "--database", self.database_url,
            cwd=self._workdir, env=self._env,
        )  # fmt: skip
        if created.returncode != 0:
            raise RuntimeError(f"retrysafe keys create failed:\n{created.stderr}")
        self.api_key = created.stdout.splitlines()[-1]
        for index in range(len(self._servers)):
            self.start_server(index)

    async def _create_postgres_database(self) -> None:
        assert self.postgres is not None
        conn = await asyncpg.connect(self.postgres.url())
        try:
            await conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
            # Stated per database so the run does not depend on the server's default:
            # "on" puts an acknowledged commit in the WAL (so it survives a SIGKILL of
            # PostgreSQL) before the client hears of it; --unsafe-commit turns it off.
            setting = "on" if self._config.synchronous_commit else "off"
            await conn.execute(
                f'ALTER DATABASE "{DATABASE_NAME}" SET synchronous_commit = {setting}'
            )
        finally:
            await conn.close()

    # -- servers ---------------------------------------------------------------------

    def server_args(self) -> list[str]:
        return [
            "--database", self.database_url,
            # Only the fault proxy answers 429 and 503-shed here: the run is about
            # crashes and lost answers, not the server's own back-pressure.
            "--rate-limit", "1000000/second",
            "--max-in-flight", "100000",
            "--document-dir", str(self._workdir / "documents"),
            "--log-level", "warning",
        ]  # fmt: skip

    def up(self) -> list[int]:
        """Indexes of the servers whose process is running."""
        return [
            index
            for index, server in enumerate(self._servers)
            if server is not None and server.process.poll() is None
        ]

    def kill_server(self, index: int) -> None:
        """SIGKILL server ``index`` (its whole process group): no shutdown code runs."""
        server = self._servers[index]
        if server is None:
            return
        server.kill()
        self._servers[index] = None
        self._count("server_kill")

    def start_server(self, index: int) -> None:
        """Start server ``index`` on its port and wait until ``/health`` answers 200.

        ``serve`` checks the schema on start and exits while PostgreSQL is down,
        so a start that coincides with a database restart is simply tried again.
        """
        give_up = time.monotonic() + START_TIMEOUT
        while True:
            server = start_server(
                self.server_args(), cwd=self._workdir, env=self._env, port=self.ports[index]
            )
            try:
                server.wait_healthy(timeout=max(1.0, give_up - time.monotonic()))
            except AssertionError:
                server.kill()
                if time.monotonic() >= give_up:
                    raise
                time.sleep(0.5)
                continue
            self._servers[index] = server
            self._count("server_start")
            return

    # -- PostgreSQL ------------------------------------------------------------------

    def restart_postgres(self, *, hard: bool, pause: float) -> None:
        """Stop PostgreSQL (fast shutdown, or SIGKILL of every process), wait, start it."""
        assert self.postgres is not None
        if hard:
            self.postgres.kill()
            self._count("postgres_kill")
        else:
            self.postgres.stop()
            self._count("postgres_stop")
        time.sleep(pause)
        self.postgres.start()
        self._count("postgres_start")

    def _count(self, event: str) -> None:
        with self._lock:
            self.events[event] += 1

    # -- tearing down ----------------------------------------------------------------

    def server_logs(self) -> list[Path]:
        return sorted(self._workdir.glob("serve-*.log"))

    def close(self) -> None:
        for index, server in enumerate(self._servers):
            if server is not None:
                server.stop()
                self._servers[index] = None
        if self.postgres is not None:
            self.postgres.close()
