"""``python -m benchmarks.chaos [options]``: one chaos run; exit 1 on any duplicate or loss."""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

from .config import Backend, ChaosConfig
from .report import summary, write_log
from .run import run


def parse_args(argv: list[str] | None = None) -> ChaosConfig:
    defaults = ChaosConfig(seed=0)
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.chaos",
        description="SDK operations through a fault-injecting proxy while servers and "
        "PostgreSQL are killed; then the database is checked against the client's log.",
    )
    parser.add_argument("--seed", type=int, help="seed of every random choice (default: random)")
    parser.add_argument("--operations", type=int, default=defaults.operations)
    parser.add_argument("--workers", type=int, default=defaults.workers)
    parser.add_argument("--servers", type=int, default=defaults.servers)
    parser.add_argument(
        "--database", choices=[b.value for b in Backend], default=defaults.backend.value
    )
    parser.add_argument("--server-kills", type=int, default=defaults.server_kills)
    parser.add_argument(
        "--postgres-restarts",
        type=int,
        help=f"default {defaults.postgres_restarts} on postgres, 0 on sqlite",
    )
    parser.add_argument("--fault-rate", type=float, default=defaults.fault_rate)
    parser.add_argument("--read-timeout", type=float, default=defaults.read_timeout)
    parser.add_argument("--max-retries", type=int, default=defaults.max_retries)
    parser.add_argument("--max-seconds", type=float, default=defaults.max_seconds)
    parser.add_argument(
        "--no-settle",
        action="store_true",
        help="skip retrying indeterminate operations with their key at the end",
    )
    parser.add_argument(
        "--unsafe-commit",
        action="store_true",
        help="PostgreSQL synchronous_commit=off: a killed PostgreSQL may forget "
        "acknowledged commits (shows the checker catching losses)",
    )
    parser.add_argument(
        "--pin-head",
        action="store_true",
        help="servers run the code committed at HEAD (a copy), not the working tree",
    )
    parser.add_argument("--workdir", type=Path, help="keep databases and logs here")
    parser.add_argument("--progress-interval", type=float, default=defaults.progress_interval)
    args = parser.parse_args(argv)
    backend = Backend(args.database)
    restarts = args.postgres_restarts
    if restarts is None:
        restarts = defaults.postgres_restarts if backend is Backend.POSTGRES else 0
    return ChaosConfig(
        seed=args.seed if args.seed is not None else random.SystemRandom().randrange(10**6),
        operations=args.operations,
        workers=args.workers,
        servers=args.servers,
        backend=backend,
        server_kills=args.server_kills,
        postgres_restarts=restarts,
        fault_rate=args.fault_rate,
        read_timeout=args.read_timeout,
        max_retries=args.max_retries,
        max_seconds=args.max_seconds,
        settle=not args.no_settle,
        synchronous_commit=not args.unsafe_commit,
        pin_head=args.pin_head,
        workdir=args.workdir,
        progress_interval=args.progress_interval,
    )


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    result = run(config)
    if result.workdir is not None:
        write_log(result, result.workdir)
    print(summary(result), flush=True)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
