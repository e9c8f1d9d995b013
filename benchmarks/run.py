"""Run every benchmark row, alternating rows within each pass, and write docs/benchmarks.md.

    python benchmarks/run.py [--passes 2] [--quick] [--rows create,replay] [--no-growth]
                             [--rev GIT_REV] [--no-write]

Each row starts its own server on a fresh database and is driven by wrk over
loopback; every pass runs every row once, so slow drift on a shared machine
touches all rows alike. The table reports medians over passes and ratios paired
within each pass. Needs wrk (apt-get install wrk), PostgreSQL on 127.0.0.1:5432
for its rows, Redis on 127.0.0.1:6379 and ``pip install -e '.[bench]'`` for the
peers, and the anchors in ``shared/bench`` beside the repository; a row whose
prerequisite is missing is skipped with the reason.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import databases, growth, machine, report, rows, servers, wrk
from benchmarks.rows import Measurement, Row

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs" / "benchmarks.md"
GROWTH_SIZES = (0, 100_000, 1_000_000)
QUICK_GROWTH_SIZES = (0, 10_000, 100_000)


class Progress:
    """One line per finished step on stderr, with the time left estimated from the past."""

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.done = 0
        self.started = time.monotonic()

    def note(self, message: str) -> None:
        print(f"         {message}", file=sys.stderr, flush=True)

    def step(self, message: str) -> None:
        self.done += 1
        elapsed = time.monotonic() - self.started
        left = elapsed / self.done * (self.steps - self.done)
        print(
            f"[{self.done:>2}/{self.steps}] {message}  "
            f"({elapsed / 60:.1f} min so far, ~{left / 60:.1f} min left)",
            file=sys.stderr,
            flush=True,
        )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--passes", type=int, default=2, help="passes over all rows (≥ 2)")
    parser.add_argument("--seconds", type=int, default=None, help="wrk duration per row")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--quick", action="store_true", help="3 s per row and a growth run to 100 k records"
    )
    parser.add_argument(
        "--rows",
        default=",".join(row.key for row in rows.ROWS),
        help="comma-separated subset of: " + ", ".join(row.key for row in rows.ROWS),
    )
    parser.add_argument("--no-growth", action="store_true", help="skip the growth run")
    parser.add_argument(
        "--rev", default=None, help="benchmark this git revision of src/ instead of the checkout"
    )
    parser.add_argument("--no-write", action="store_true", help=f"do not rewrite {DOCS}")
    parser.add_argument("--output", type=Path, default=DOCS)
    args = parser.parse_args(argv)
    if args.passes < 2:
        parser.error("--passes must be at least 2: the table reports medians over passes")
    if args.seconds is None:
        args.seconds = 3 if args.quick else 6
    unknown = set(args.rows.split(",")) - set(rows.ROWS_BY_KEY)
    if unknown:
        parser.error(f"unknown rows: {', '.join(sorted(unknown))}")
    return args


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def _redis_reachable() -> bool:
    try:
        import redis

        client = redis.Redis.from_url(rows.REDIS_URL, socket_timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # any failure means the row cannot run
        return False


def _serve_has(flag: str) -> bool:
    """Whether ``retrysafe serve`` (the code under test) knows ``flag``."""
    done = subprocess.run(
        [sys.executable, "-m", "retrysafe", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )
    return flag in done.stdout


def _needs_redis(row: Row) -> bool:
    if row.server.kind == "library":
        return row.server.variant == "redis"
    return row.server.kind == "peer" and rows.PEER_BACKENDS.get(row.server.variant) == "Redis"


def runnable(chosen: Sequence[Row]) -> tuple[list[Row], dict[str, str]]:
    """The rows whose prerequisites are there, and why the others are skipped."""
    skipped: dict[str, str] = {}
    postgres = redis = anchors = synchronous = None
    for row in chosen:
        spec = row.server
        reason = row.unavailable
        if not reason and (spec.kind in servers.ANCHOR_KINDS or spec.kind in ("peer", "library")):
            if anchors is None:
                try:
                    servers.anchor_dir()
                    anchors = ""
                except servers.AnchorsMissing as exc:
                    anchors = str(exc)
            reason = anchors
        if not reason and spec.database == "postgres":
            postgres = databases.postgres_reachable() if postgres is None else postgres
            if not postgres:
                reason = f"PostgreSQL is not reachable at {databases.POSTGRES_ADMIN_URL}"
        if not reason and spec.kind == "peer":
            module = rows.PEER_MODULES[spec.variant]
            if not _importable(module):
                reason = f"the peer {spec.variant} is not installed: pip install -e '.[bench]'"
        if not reason and _needs_redis(row):
            redis = _redis_reachable() if redis is None else redis
            if not redis:
                reason = f"Redis is not reachable at {rows.REDIS_URL}"
        if not reason and spec.sqlite_synchronous is not None:
            synchronous = _serve_has("--sqlite-synchronous") if synchronous is None else synchronous
            if not synchronous:
                reason = "`retrysafe serve` has no --sqlite-synchronous flag in this revision yet"
        if reason:
            skipped[row.key] = reason
    return [row for row in chosen if row.key not in skipped], skipped


def use_revision(rev: str) -> str:
    """Export ``rev``'s src/ and make it the retrysafe every process imports."""
    target = Path(tempfile.mkdtemp(prefix="rs-bench-src-"))
    # git and tar from PATH, as a developer would type them.
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", rev, "src"],  # noqa: S607
        capture_output=True,
        check=True,
    )
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)  # noqa: S607
    source = str(target / "src")
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [source, *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    sys.path.insert(0, source)
    return subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", rev],  # noqa: S607
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def commands(
    args: argparse.Namespace, measured: dict[str, Measurement], invocation: Sequence[str]
) -> list[str]:
    lines = ["# this run", shlex.join(["python", "benchmarks/run.py", *invocation])]
    lines.append(
        "# servers: a fresh PORT and database DB each run; bare, peer and library apps run in"
        " benchmarks/, ANCHORS is shared/bench beside the repository"
    )
    for key, measurement in measured.items():
        lines.append(f"{key}: " + shlex.join(_generic(rows.ROWS_BY_KEY[key], measurement.argv)))
    lines.append("# load (MODE=new|same|bad, API_KEY from `retrysafe keys create --org bench`)")
    lines.append(
        shlex.join(
            wrk.command("http://127.0.0.1:PORT", seconds=args.seconds, connections=args.connections)
        ).replace(str(REPO) + "/", "")
    )
    return lines


def _generic(row: Row, argv: Sequence[str]) -> list[str]:
    """A server's command line with this run's port, paths and database taken out."""
    words = ["PORT" if word.isdigit() and len(word) >= 4 else word for word in argv]
    for index, word in enumerate(words[:-1]):
        if word == "--database":
            scheme = words[index + 1].split(":", 1)[0]
            words[index + 1] = "sqlite:///DB" if scheme == "sqlite" else f"{scheme}://…/DB"
        if word == "--app-dir":
            words[index + 1] = "ANCHORS"
    spec = row.server
    if spec.kind == "anchor_postgres":
        words = ["PERF_PG=postgresql://postgres@127.0.0.1:5432/DB", *words]
    elif spec.kind == "anchor_sqlite":
        words = ["PERF_DB=DB", *words]
    elif spec.kind == "bare":
        words = ["BARE_DB=DB", *words]
    elif spec.kind == "peer":
        words = [f"PEER={spec.variant}", "PERF_DB=DB", "PYTHONPATH=ANCHORS", *words]
        if rows.PEER_BACKENDS.get(spec.variant) == "Redis":
            words = ["PEER_REDIS_URL=" + rows.REDIS_URL, *words]
    elif spec.kind == "library":
        store = {"sqlite": "LIB_STORE_URL=sqlite:///IDEMPOTENCY_DB", "redis": "LIB_STORE_URL="
                 + rows.REDIS_URL}.get(spec.variant)  # fmt: skip
        words = [f"LIB_STORE={spec.variant}", *([store] if store else []), "BENCH_KEY=KEY",
                 "PERF_DB=DB", "PYTHONPATH=ANCHORS", *words]  # fmt: skip
    return words


def skeleton(section: str) -> str:
    intro = "# Benchmarks\n\nRun `python benchmarks/run.py` to refresh the results below.\n\n"
    return intro + section + "\n"


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    # SystemExit unwinds through every ``with``: the servers started so far are
    # stopped and the throwaway databases dropped, as on Ctrl-C.
    sys.exit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    invocation = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(invocation)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        wrk.wrk_path()
    except wrk.WrkMissing as exc:
        sys.exit(str(exc))
    revision = use_revision(args.rev) if args.rev else machine.git_revision()
    chosen = [rows.ROWS_BY_KEY[key] for key in args.rows.split(",")]
    to_run, skipped = runnable(chosen)
    for key, reason in skipped.items():
        print(f"skipping row {key}: {reason}", file=sys.stderr)
    sizes = () if args.no_growth else (QUICK_GROWTH_SIZES if args.quick else GROWTH_SIZES)
    progress = Progress(args.passes * (len(to_run) + len(sizes)) + (1 if sizes else 0))
    load_before = machine.load_average()
    print(f"load average (1/5/15 min) at the start: {load_before}", file=sys.stderr)
    print(
        f"benchmarking retrysafe {revision}: {len(to_run)} rows × {args.passes} passes of "
        f"{args.seconds} s" + (f", growth to {growth.label(sizes[-1])} records" if sizes else ""),
        file=sys.stderr,
    )

    passes: list[dict[str, Measurement]] = []
    for number in range(1, args.passes + 1):
        this_pass: dict[str, Measurement] = {}
        for row in to_run:
            measurement = rows.measure(row, seconds=args.seconds, connections=args.connections)
            this_pass[row.key] = measurement
            odd = f", {measurement.unexpected} unexpected answers" if measurement.unexpected else ""
            progress.step(
                f"pass {number}: {row.label}: {measurement.result.rps:.0f} req/s, "
                f"p99 {measurement.result.p99_ms:.1f} ms{odd}"
            )
        passes.append(this_pass)

    points: list[growth.GrowthPoint] = []
    if sizes:
        with growth.databases(sizes, progress.note) as made:
            progress.step(f"growth databases ready ({', '.join(growth.label(s) for s in sizes)})")
            per_size: dict[int, list[growth.GrowthPoint]] = {size: [] for size in sizes}
            for number in range(1, args.passes + 1):
                for size in sizes:
                    url, key = made[size]
                    point = growth.measure(
                        url, key, size, seconds=args.seconds, connections=args.connections
                    )
                    per_size[size].append(point)
                    progress.step(
                        f"pass {number}: growth {point.label}: {point.rps:.0f} req/s, "
                        f"p99 {point.p99_ms:.1f} ms, RSS {point.rss_mb:.0f} MiB"
                    )
            points = [growth.median_point(per_size[size]) for size in sizes]

    load_after = machine.load_average()
    print(f"load average (1/5/15 min) at the end: {load_after}", file=sys.stderr)
    summaries = report.summarize(passes)
    found = report.targets(passes, points)
    print("\n" + report.table(summaries) + "\n\n" + report.targets_table(found), flush=True)
    if points:
        print("\n" + report.growth_table(points))
    for key, reason in skipped.items():
        print(f"\nrow {key} skipped: {reason}")

    facts = {
        "when": time.strftime("%Y-%m-%d %H:%M %Z"),
        "passes": f"{args.passes} (every row once per pass, in table order); medians shown",
        "load": f"wrk -t{wrk.THREADS} -c{args.connections} -d{args.seconds}s over loopback, "
        "on the same machine as the server",
        "load average (1/5/15 min)": f"{load_before} at the start, {load_after} at the end",
        "× anchor": "median over passes of the row's req/s ÷ its anchor's req/s in the same"
        " pass (anchor_postgres for the PostgreSQL rows, anchor_sqlite for the others)",
    }
    facts.update({f"row {key} skipped": reason for key, reason in skipped.items()})
    measured_peers = {row.server.variant for row in to_run if row.server.kind == "peer"}
    facts.update(
        {f"peer {name}": note for name, note in rows.PEER_NOTES.items() if name in measured_peers}
    )
    measured = {key: m for key, m in passes[0].items()} if passes else {}
    section = report.results_section(
        summaries=summaries,
        found=found,
        growth=points,
        facts=facts,
        machine=machine.machine(),
        versions=machine.versions(revision),
        commands=commands(args, measured, invocation),
        quiet_note=(
            "A shared or busy machine makes every figure noisy; the table to publish comes "
            "from a quiet machine (load average near 0 before the run)."
        ),
    )
    if not args.no_write:
        report.write(args.output, section, skeleton)
        print(f"\nwrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
