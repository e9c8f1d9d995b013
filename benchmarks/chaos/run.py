"""One chaos run, start to finish: set up, run workload and nemesis, settle, check, summarize."""

from __future__ import annotations

import asyncio
import io
import logging
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx
from tests.support.fault_proxy import FaultProxy

from retrysafe import AsyncClient

from .balancer import Balancer
from .checker import Verdict, check
from .cluster import Cluster
from .config import ChaosConfig
from .faults import FaultChooser, fault_name
from .history import Answer, AnswerLog, Operation, Outcome
from .nemesis import Nemesis, schedule
from .snapshot import read_snapshot
from .workload import Workload, perform

__all__ = ["RunResult", "run"]

STALL_SECONDS = 60.0
"""How long a stalled answer holds the connection; the client leaves at its read timeout."""


@dataclass
class RunResult:
    """Everything the summary prints, and what the smoke test asserts on."""

    config: ChaosConfig
    operations: list[Operation]
    during: Verdict
    """The check on the outcomes as they ended during the chaos."""
    settled: Verdict | None
    """The check after every indeterminate operation was retried once with its key."""
    requests: int = 0
    """Attempts that reached the fault proxy (every attempt the client made)."""
    forwarded: int = 0
    """Attempts the proxy passed on towards a server."""
    faults: Counter[str] = field(default_factory=Counter)
    retries: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)
    nemesis_fired: int = 0
    nemesis_skipped: int = 0
    balancer_turned_away: int = 0
    server_5xx: Counter[int] = field(default_factory=Counter)
    """5xx the servers sent (the client may not have seen them)."""
    workload_seconds: float = 0.0
    elapsed: float = 0.0
    timed_out: bool = False
    workdir: Path | None = None

    @property
    def ok(self) -> bool:
        checks = [self.during] + ([self.settled] if self.settled is not None else [])
        return all(verdict.ok for verdict in checks)


class RetryCounter(logging.Handler):
    """Counts the SDK's retry log records (``retrysafe.client`` at INFO) by reason."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.reasons: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        reason = getattr(record, "retry_reason", None)
        if isinstance(reason, str):
            self.reasons[reason.split(" (")[0].split(",")[0]] += 1


@contextmanager
def _counting_retries() -> Iterator[RetryCounter]:
    logger = logging.getLogger("retrysafe.client")
    counter = RetryCounter()
    level, propagate = logger.level, logger.propagate
    logger.addHandler(counter)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # count the lines, do not print thousands of them
    try:
        yield counter
    finally:
        logger.removeHandler(counter)
        logger.setLevel(level)
        logger.propagate = propagate


def _http(config: ChaosConfig, log: AnswerLog) -> httpx.AsyncClient:
    """The SDK's connection pool, with the hook that logs every answer (the caller closes it)."""
    return httpx.AsyncClient(
        event_hooks={"response": [log.hook]},
        limits=httpx.Limits(max_connections=config.workers * 2),
    )


def _client(
    config: ChaosConfig, base_url: str, api_key: str, http: httpx.AsyncClient
) -> AsyncClient:
    return AsyncClient(
        api_key,
        base_url=base_url,
        timeout=httpx.Timeout(connect=2.0, read=config.read_timeout, write=5.0, pool=10.0),
        max_retries=config.max_retries,
        max_backpressure_retries=config.max_backpressure_retries,
        deadline=config.call_deadline,
        http_client=http,
    )


def _server_answers(proxy: FaultProxy) -> dict[str, list[Answer]]:
    answers: dict[str, list[Answer]] = {}
    for record in proxy.requests:
        if record.idempotency_key is None or record.response_status is None:
            continue
        answer = Answer.of(record.response_status, record.response_headers, record.response_body)
        answers.setdefault(record.idempotency_key, []).append(answer)
    return answers


def progress_line(started: float, workload: Workload, config: ChaosConfig, extra: str) -> str:
    outcomes = workload.outcomes
    elapsed = time.monotonic() - started
    return (
        f"[{elapsed:6.1f}s] ops {workload.finished}/{config.operations} "
        f"ok {outcomes[Outcome.OK]} rejected {outcomes[Outcome.REJECTED]} "
        f"indeterminate {outcomes[Outcome.INDETERMINATE]} "
        f"unexpected {outcomes[Outcome.UNEXPECTED]} | {extra} | "
        f"{workload.finished / max(elapsed, 1e-9):.0f} ops/s"
    )


async def _report_progress(
    config: ChaosConfig,
    workload: Workload,
    chooser: FaultChooser,
    retries: RetryCounter,
    cluster: Cluster,
    started: float,
) -> None:
    while config.progress_interval > 0:
        await asyncio.sleep(config.progress_interval)
        faults = sum(chooser.chosen.values()) - chooser.chosen["none"]
        events = cluster.events
        extra = (
            f"faults {faults} retries {sum(retries.reasons.values())} "
            f"kills {events['server_kill']} pg {events['postgres_stop'] + events['postgres_kill']}"
        )
        print(progress_line(started, workload, config, extra), file=sys.stderr, flush=True)


async def _settle(client: AsyncClient, operations: list[Operation], log: AnswerLog) -> None:
    """Retry each indeterminate operation once, with its own key, now that all is calm.

    This is the SDK's documented remedy ("call again with the same key"): a
    replay means the write had happened during the chaos, a fresh answer that
    it had not and happened now. Either way it happened once.
    """
    for op in operations:
        if op.outcome is not Outcome.INDETERMINATE:
            continue
        probe = Operation(op.index, op.worker, op.kind, op.key, op.tag)
        probe.reference_id, probe.target, probe.value = op.reference_id, op.target, op.value
        before = len(log.by_key[op.key])
        op.settled = await perform(client, probe)
        op.detail = op.detail or probe.detail
        fresh = log.by_key[op.key][before:]
        op.settled_by_replay = bool(fresh) and fresh[-1].replayed
        if op.settled is Outcome.OK:
            op.result_id, op.result_account_id = probe.result_id, probe.result_account_id
        elif op.settled is not Outcome.REJECTED:
            op.detail = f"{op.detail}; settle: {probe.detail}"


async def _run(config: ChaosConfig, workdir: Path) -> RunResult:
    started = time.monotonic()
    rng = random.Random(config.seed)
    run_id = f"c{config.seed}"
    cluster = Cluster(config, workdir)
    print(
        f"chaos run: seed {config.seed}, {config.operations} operations, "
        f"{config.workers} workers, {config.servers} servers on {config.backend.value}, "
        f"work directory {workdir}",
        file=sys.stderr,
        flush=True,
    )
    try:
        await asyncio.to_thread(cluster.start)
        backends = [("127.0.0.1", port) for port in cluster.ports]
        chooser = FaultChooser(rng.randrange(2**32), config.fault_rate)
        log = AnswerLog()
        with (
            Balancer(backends) as balancer,
            FaultProxy("127.0.0.1", balancer.port, stall_seconds=STALL_SECONDS) as proxy,
            _counting_retries() as retries,
        ):
            proxy.set_chooser(chooser)
            async with (
                _http(config, log) as http,
                _client(config, proxy.url, cluster.api_key, http) as client,
            ):
                workload = Workload(
                    client,
                    operations=config.operations,
                    workers=config.workers,
                    seed=config.seed,
                    run_id=run_id,
                    max_seconds=config.max_seconds,
                )
                nemesis = Nemesis(cluster, schedule(config, rng), rng, lambda: workload.finished)
                done = asyncio.Event()
                reporter = asyncio.create_task(
                    _report_progress(config, workload, chooser, retries, cluster, started)
                )
                chaos = asyncio.create_task(nemesis.run(done))
                workload_started = time.monotonic()
                try:
                    await workload.run()
                finally:
                    workload_seconds = time.monotonic() - workload_started
                    done.set()
                    await chaos
                    await nemesis.calm()
                    reporter.cancel()
                proxy.set_chooser(None)
                snapshot = await read_snapshot(cluster.database_url)
                server_answers = _server_answers(proxy)
                during = check(workload.operations, snapshot, log.by_key, server_answers)
                settled = None
                if config.settle:
                    await _settle(client, workload.operations, log)
                    snapshot = await read_snapshot(cluster.database_url)
                    server_answers = _server_answers(proxy)
                    settled = check(workload.operations, snapshot, log.by_key, server_answers)
            requests = proxy.requests
        return RunResult(
            config=config,
            operations=workload.operations,
            during=during,
            settled=settled,
            requests=len(requests),
            forwarded=sum(record.forwarded for record in requests),
            faults=Counter(fault_name(record.action) for record in requests),
            retries=retries.reasons,
            events=Counter(cluster.events),
            nemesis_fired=nemesis.fired,
            nemesis_skipped=nemesis.skipped,
            balancer_turned_away=balancer.turned_away,
            server_5xx=Counter(
                record.response_status
                for record in requests
                if record.response_status is not None and record.response_status >= 500
            ),
            workload_seconds=workload_seconds,
            elapsed=time.monotonic() - started,
            timed_out=workload.timed_out,
            workdir=workdir,
        )
    finally:
        await asyncio.to_thread(cluster.close)


def _git(repo: Path, *args: str) -> bytes:
    git = shutil.which("git")
    if git is None:
        raise RuntimeError("--pin-head needs git on PATH")
    return subprocess.run([git, *args], cwd=repo, capture_output=True, check=True).stdout


def pin_head(workdir: Path) -> tuple[Path, str]:
    """Copy ``src/`` as committed at ``HEAD`` into ``workdir``; returns its path and the commit."""
    repo = Path(__file__).resolve().parents[2]
    commit = _git(repo, "rev-parse", "--short", "HEAD").decode().strip()
    archive = _git(repo, "archive", "--format=tar", commit, "src")
    target = workdir / f"pinned-{commit}"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    return target / "src", commit


def run(config: ChaosConfig) -> RunResult:
    """Run the chaos described by ``config``; the work directory is kept only on failure."""
    temporary = config.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="retrysafe-chaos-")) if temporary else config.workdir
    assert workdir is not None
    workdir.mkdir(parents=True, exist_ok=True)
    if config.pin_head:
        source, commit = pin_head(workdir)
        config = replace(config, server_src=source)
        print(f"servers run commit {commit}, copied to {source}", file=sys.stderr, flush=True)
    result: RunResult | None = None
    try:
        result = asyncio.run(_run(config, workdir))
        return result
    finally:
        if temporary and result is not None and result.ok:
            shutil.rmtree(workdir, ignore_errors=True)
            result.workdir = None
