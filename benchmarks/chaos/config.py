"""The chaos run's knobs: one frozen object, built from the command line and passed down."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path


class Backend(enum.Enum):
    """Which database the servers share."""

    POSTGRES = "postgres"
    """A throwaway PostgreSQL the run starts, kills and restarts (the main target)."""
    SQLITE = "sqlite"
    """One SQLite file shared by the server processes; only the servers are killed."""


@dataclass(frozen=True)
class ChaosConfig:
    """Everything one chaos run depends on; the seed makes its schedule reproducible."""

    seed: int
    """Seeds every random choice: the operations, the nemesis schedule, the faults."""
    operations: int = 10_000
    """Client operations to run (each one SDK call, with all its retries)."""
    workers: int = 16
    """Concurrent workers, each an asyncio task calling the shared ``AsyncClient``."""
    servers: int = 2
    """``retrysafe serve`` processes behind the load balancer."""
    backend: Backend = Backend.POSTGRES
    server_kills: int = 20
    """SIGKILLs of a server process, spread over the run by operation count."""
    postgres_restarts: int = 6
    """PostgreSQL restarts (alternately a clean stop and a SIGKILL of every process)."""
    fault_rate: float = 0.2
    """Share of API requests the proxy hits with a fault (the rest are relayed)."""
    read_timeout: float = 2.0
    """The client's per-attempt read timeout: how long a stalled answer holds a worker."""
    max_retries: int = 4
    """The client's ``max_retries`` (network failures); see README "Retrying safely"."""
    max_backpressure_retries: int = 40
    """The client's budget for 429 / in-flight 409 / 503 waits (a PostgreSQL restart)."""
    call_deadline: float = 60.0
    """The client's ``deadline`` for one call, retries and waits included."""
    max_seconds: float = 900.0
    """Time bound of the workload: no operation starts after it."""
    settle: bool = True
    """After the chaos, retry every indeterminate operation once with its own key."""
    synchronous_commit: bool = True
    """PostgreSQL ``synchronous_commit`` for the run's database. ``False`` lets a killed
    PostgreSQL forget acknowledged commits: a way to see the checker catch a loss."""
    server_src: Path | None = None
    """A ``src`` directory the server processes import ``retrysafe`` from, instead of the
    installed package (``--pin-head`` fills it with the committed code)."""
    pin_head: bool = False
    """Run the servers on the code committed at ``HEAD``, copied into the work directory:
    edits to the working tree during a long run then do not change what is under test."""
    workdir: Path | None = None
    """Where databases and server logs go; a temporary directory when ``None``."""
    progress_interval: float = 2.0
    """Seconds between progress lines on stderr; 0 for none."""

    def __post_init__(self) -> None:
        if self.operations < 1 or self.workers < 1 or self.servers < 1:
            raise ValueError("operations, workers and servers must be at least 1")
        if not 0.0 <= self.fault_rate <= 1.0:
            raise ValueError("fault_rate must be between 0 and 1")
        if self.server_kills < 0 or self.postgres_restarts < 0:
            raise ValueError("server_kills and postgres_restarts must not be negative")
        if self.backend is Backend.SQLITE and self.postgres_restarts:
            raise ValueError("SQLite has no server to restart: set postgres_restarts to 0")
