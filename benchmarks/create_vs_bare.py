"""Create throughput of the full retrysafe pipeline next to a bare FastAPI insert.

Starts each server as a real process on loopback, drives it with wrk, and reads the
server's CPU time from /proc. Passes alternate between the servers so both see the
same machine; the table reports medians and same-run ratios. Needs `wrk` on PATH.

    python benchmarks/create_vs_bare.py [--passes 3] [--seconds 6] [--connections 32]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
TICKS = os.sysconf("SC_CLK_TCK")
WRK = shutil.which("wrk") or "wrk"


@dataclass(frozen=True)
class Pass:
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_ms_per_request: float


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def wait_healthy(port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"server on port {port} did not become healthy")


def latency_ms(text: str, label: str) -> float:
    match = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\b", text, re.MULTILINE)
    if match is None:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def drive(port: int, pid: int, mode: str, api_key: str, seconds: int, connections: int) -> Pass:
    before = cpu_seconds(pid)
    result = subprocess.run(
        [
            WRK,
            "-t2",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(HERE / "create.lua"),
            f"http://127.0.0.1:{port}",
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "MODE": mode, "API_KEY": api_key},
    )
    used = cpu_seconds(pid) - before
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", result.stdout).group(1))  # type: ignore[union-attr]
    return Pass(
        rps,
        latency_ms(result.stdout, "50%"),
        latency_ms(result.stdout, "99%"),
        1000 * used / (rps * seconds),
    )


def start_bare(workdir: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bare_app:app",
            "--port",
            str(port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=HERE,
        env={**os.environ, "BARE_DB": str(workdir / "bare.db")},
    )


def start_retrysafe(workdir: Path, port: int) -> tuple[subprocess.Popen[bytes], str]:
    database = f"sqlite:///{workdir / 'retrysafe.db'}"
    cli = [sys.executable, "-m", "retrysafe"]
    created = subprocess.run(
        [*cli, "keys", "create", "--org", "bench", "--database", database],
        capture_output=True,
        text=True,
        check=True,
    )
    api_key = created.stdout.strip().splitlines()[-1]
    server = subprocess.Popen(
        [
            *cli,
            "serve",
            "--port",
            str(port),
            "--database",
            database,
            "--rate-limit",
            "1000000/second",
            "--log-level",
            "warning",
        ],
    )
    return server, api_key


def run(name: str, mode: str, args: argparse.Namespace, port: int) -> Pass:
    workdir = Path(tempfile.mkdtemp(prefix="retrysafe-bench-"))
    try:
        if name == "bare":
            server, api_key = start_bare(workdir, port), ""
        else:
            server, api_key = start_retrysafe(workdir, port)
        try:
            wait_healthy(port)
            return drive(port, server.pid, mode, api_key, args.seconds, args.connections)
        finally:
            server.terminate()
            server.wait(timeout=20)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (Debian: apt-get install wrk)")
    rows = {
        "bare FastAPI insert": ("bare", "new"),
        "retrysafe create (new key)": ("rs", "new"),
        "retrysafe replay (one key)": ("rs", "same"),
        "retrysafe 4xx (recorded)": ("rs", "bad"),
    }
    results: dict[str, list[Pass]] = {row: [] for row in rows}
    for number in range(1, args.passes + 1):
        for row, (name, mode) in rows.items():
            outcome = run(name, mode, args, 18_500)
            results[row].append(outcome)
            print(
                f"pass {number}/{args.passes} {row}: {outcome.rps:.0f} req/s, "
                f"{outcome.cpu_ms_per_request:.2f} ms CPU/request",
                file=sys.stderr,
            )
    baseline = statistics.median(p.rps for p in results["bare FastAPI insert"])
    print(f"\n{args.passes} passes of wrk -t2 -c{args.connections} -d{args.seconds}s; medians\n")
    print("| row | req/s | ratio to bare | p50 ms | p99 ms | server CPU ms/request |")
    print("|---|---|---|---|---|---|")
    for row, passes in results.items():
        rps = statistics.median(p.rps for p in passes)
        print(
            f"| {row} | {rps:.0f} | {rps / baseline:.2f}x "
            f"| {statistics.median(p.p50_ms for p in passes):.1f} "
            f"| {statistics.median(p.p99_ms for p in passes):.1f} "
            f"| {statistics.median(p.cpu_ms_per_request for p in passes):.2f} |"
        )


if __name__ == "__main__":
    main()
