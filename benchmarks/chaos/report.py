"""The summary a chaos run prints: counts first, then every finding, if any."""

from __future__ import annotations

import enum
import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from .checker import CATEGORIES, Verdict
from .history import Kind, Outcome
from .run import RunResult

__all__ = ["summary", "write_log"]

MAX_FINDINGS = 5
"""Findings printed per category and check; all of them go to ``findings.txt``."""


def _counts(counter: Mapping[str, int], skip: tuple[str, ...] = ()) -> str:
    items = [(name, count) for name, count in counter.items() if name not in skip and count]
    items.sort(key=lambda item: (-item[1], item[0]))
    return ", ".join(f"{name} {count}" for name, count in items) or "none"


def _verdict_lines(title: str, verdict: Verdict) -> list[str]:
    lines = [
        f"{title}: duplicates = {verdict.count('duplicate')}, lost = {verdict.count('lost')}, "
        f"replay mismatches = {verdict.count('replay_mismatch')}, "
        f"unexpected answers = {verdict.count('unexpected')} "
        f"(indeterminate = {verdict.outcomes[Outcome.INDETERMINATE]}, "
        f"{verdict.keys_checked} keys checked)"
    ]
    for category in CATEGORIES:
        found = [finding for finding in verdict.findings if finding.category == category]
        lines += [f"    {category}: {finding.detail}" for finding in found[:MAX_FINDINGS]]
        if len(found) > MAX_FINDINGS:
            lines.append(f"    … and {len(found) - MAX_FINDINGS} more {category} findings")
    return lines


def summary(result: RunResult) -> str:
    """The printed summary: what ran, what was injected, and what the check found."""
    config, ops = result.config, result.operations
    outcomes = Counter(op.outcome for op in ops)
    kinds = Counter(op.kind for op in ops)
    indeterminate = [op for op in ops if op.outcome is Outcome.INDETERMINATE]
    replayed = sum(op.settled_by_replay is True for op in indeterminate)
    settled = sum(op.settled in (Outcome.OK, Outcome.REJECTED) for op in indeterminate)
    events = result.events
    faults = sum(count for name, count in result.faults.items() if name != "none")
    lines = [
        f"chaos run, seed {config.seed}: {config.backend.value}, {config.servers} servers, "
        f"{config.workers} workers, fault rate {config.fault_rate:g}",
        f"operations           {len(ops)}"
        + (" (stopped by the time bound)" if result.timed_out else ""),
        "  by kind            " + _counts({kind.value: kinds[kind] for kind in Kind}),
        f"  acknowledged       {outcomes[Outcome.OK] + outcomes[Outcome.REJECTED]} "
        f"(ok {outcomes[Outcome.OK]}, expected refusals {outcomes[Outcome.REJECTED]})",
        f"  indeterminate      {len(indeterminate)}",
    ]
    if result.settled is not None:
        lines.append(
            f"    settled          {settled} by retrying with the same key: {replayed} replayed "
            f"(had happened), {settled - replayed} ran then (had not); "
            f"{len(indeterminate) - settled} still unknown"
        )
    lines += [
        f"  unexpected         {outcomes[Outcome.UNEXPECTED]}",
        f"requests             {result.requests} attempts, {result.forwarded} forwarded "
        f"towards a server",
        f"faults injected      {faults}: " + _counts(result.faults, skip=("none",)),
        f"retries              {sum(result.retries.values())}: " + _counts(result.retries),
        f"restarts             server kills {events['server_kill']}, "
        f"server starts {events['server_start']} (first starts included), "
        f"PostgreSQL stops {events['postgres_stop']}, PostgreSQL kills {events['postgres_kill']}"
        + (f"; {result.nemesis_skipped} events not fired" if result.nemesis_skipped else ""),
        "server 5xx           " + _counts({str(k): v for k, v in result.server_5xx.items()}),
        f"load balancer        {result.balancer_turned_away} connections found no server up",
        f"replays seen         {result.during.replays_seen} answers with Idempotent-Replayed: "
        f"true reached the client during the chaos",
    ]
    lines += _verdict_lines("check during chaos", result.during)
    if result.settled is not None:
        lines += _verdict_lines("check after settling", result.settled)
    rate = len(ops) / result.workload_seconds if result.workload_seconds else 0.0
    lines += [
        f"duplicates = {_total(result, 'duplicate')}",
        f"lost = {_total(result, 'lost')}",
        f"indeterminate = {len(indeterminate)}",
        f"elapsed              {result.elapsed:.1f} s "
        f"(workload {result.workload_seconds:.1f} s, {rate:.0f} operations/s)",
        "result               " + ("PASS" if result.ok else "FAIL"),
    ]
    if result.workdir is not None:
        lines.append(f"work directory       {result.workdir} (server logs kept)")
    return "\n".join(lines)


def _total(result: RunResult, category: str) -> int:
    counts = [result.during.count(category)]
    if result.settled is not None:
        counts.append(result.settled.count(category))
    return max(counts)


def write_log(result: RunResult, directory: Path) -> None:
    """Every operation (``operations.jsonl``) and finding (``findings.txt``): the post-mortem."""
    with (directory / "operations.jsonl").open("w") as out:
        for op in sorted(result.operations, key=lambda op: op.index):
            record = {
                name: value.value if isinstance(value, enum.Enum) else value
                for name, value in vars(op).items()
            }
            out.write(json.dumps(record) + "\n")
    with (directory / "findings.txt").open("w") as out:
        checks = [("during", result.during), ("settled", result.settled)]
        for title, verdict in checks:
            for finding in verdict.findings if verdict is not None else ():
                out.write(f"{title}\t{finding.category}\t{finding.detail}\n")
