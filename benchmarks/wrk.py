"""Run wrk against a server and parse what it prints.

wrk drops requests slower than its ``--timeout`` from the latency figures and
counts them only as socket timeouts, so the timeout is set well above any tail
we expect, and the timeouts are reported beside the latencies.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent / "create.lua"
THREADS = 2
TIMEOUT_SECONDS = 10

_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


class WrkMissing(RuntimeError):
    """wrk is not on PATH."""


class WrkOutputError(ValueError):
    """wrk printed something without the figures we read."""


@dataclass(frozen=True)
class WrkResult:
    """One wrk run: throughput, latency percentiles, and what went wrong."""

    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    statuses: dict[int, int]
    """Answers by HTTP status, as counted by create.lua."""


def wrk_path() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise WrkMissing("wrk is not installed (Debian/Ubuntu: apt-get install wrk)")
    return path


def command(url: str, *, seconds: int, connections: int) -> list[str]:
    """The exact wrk command line of a run (also quoted in docs/benchmarks.md)."""
    return [
        "wrk",
        f"-t{THREADS}",
        f"-c{connections}",
        f"-d{seconds}s",
        f"--timeout={TIMEOUT_SECONDS}s",
        "--latency",
        "-s",
        str(SCRIPT),
        url,
    ]


def run(
    url: str, *, mode: str, api_key: str, seconds: int, connections: int
) -> tuple[WrkResult, str]:
    """Drive ``url`` with create.lua in ``mode`` (new, same or bad); the result and raw output."""
    argv = command(url, seconds=seconds, connections=connections)
    argv[0] = wrk_path()
    completed = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + TIMEOUT_SECONDS + 30,
        env={**os.environ, "MODE": mode, "API_KEY": api_key},
    )
    return parse(completed.stdout), completed.stdout


def _duration_ms(value: str, unit: str) -> float:
    return float(value) * _UNITS_MS[unit]


def _percentile(text: str, label: str) -> float:
    match = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.MULTILINE)
    if match is None:
        raise WrkOutputError(f"no {label} latency in wrk output")
    return _duration_ms(match.group(1), match.group(2))


def parse(text: str) -> WrkResult:
    """Read the summary wrk prints with ``--latency``."""
    total = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)", text, re.MULTILINE)
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.MULTILINE)
    if total is None or rps is None:
        raise WrkOutputError("no request count or Requests/sec in wrk output")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    return WrkResult(
        requests=int(total.group(1)),
        seconds=_duration_ms(total.group(2), total.group(3)) / 1000,
        rps=float(rps.group(1)),
        p50_ms=_percentile(text, "50%"),
        p99_ms=_percentile(text, "99%"),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
        statuses={
            int(status): int(count)
            for status, count in re.findall(r"^status (\d+): (\d+)$", text, re.MULTILINE)
        },
    )
