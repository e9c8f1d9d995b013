"""Under ``CI=true``, a test skipped for want of PostgreSQL, Redis or a browser fails the run.

And in any run, a thread left running at the end (a connection a test never closed:
aiosqlite's worker threads are not daemons) fails the run instead of keeping the
interpreter from exiting, which would hang CI until its time limit.

Locally those tests skip so the suite runs with only Python; in CI a skip would hide
that a backend (or the dashboard's browser test) was never exercised, so ``.ci/run``
must not pass with one. This lives
in the root conftest, apart from ``tests/conftest.py``, so it guards every test tree.

Both guards hold under pytest-xdist too (the suite runs on worker processes, see
pyproject.toml): the controller, which alone decides the run's exit status, sees every
test's report (each marked by its worker as a service test or not) and every
worker's threads left running after its session.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Generator
from typing import Any

import pytest

SERVICE_MARKERS = ("postgres", "redis", "browser")
"""Markers of tests that need a server; their skips count as failures under CI."""

SERVICE_WORDS = ("postgres", "redis", "chromium", "playwright")
"""Skip reasons that mention one of these (case-insensitively) count too."""


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


class ServiceSkipGuard:
    """Collects skips of service-backed tests and fails the session for them under CI."""

    def __init__(self) -> None:
        self.skips: list[str] = []

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        # The report says whether its test is service-backed: under xdist it travels to
        # the controller, which collects nothing itself and never sees the markers.
        report = yield
        if any(item.get_closest_marker(name) is not None for name in SERVICE_MARKERS):
            report.retrysafe_service_test = True  # type: ignore[attr-defined]
        return report

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._record(report)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        # A module that skips as a whole (importorskip, allow_module_level) reports here.
        self._record(report)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        # Only turn success (or "no tests") into failure; keep worse statuses as they are.
        ok = (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED)
        if in_ci() and self.skips and session.exitstatus in ok:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not (in_ci() and self.skips):
            return
        terminalreporter.section("CI=true: service tests were skipped", red=True, bold=True)
        terminalreporter.line(
            "PostgreSQL, Redis and Chromium must be there under CI; these did not run:"
        )
        for line in self.skips:
            terminalreporter.line(f"  {line}")

    def _record(self, report: pytest.TestReport | pytest.CollectReport) -> None:
        if not report.skipped or hasattr(report, "wasxfail"):
            return
        reason = _skip_reason(report)
        marked = getattr(report, "retrysafe_service_test", False)
        if marked or any(word in reason.lower() for word in SERVICE_WORDS):
            self.skips.append(f"{report.nodeid}: {reason}")


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    # A skip's longrepr is (path, line, "Skipped: reason").
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


THREAD_GRACE_SECONDS = 5.0
"""How long threads still running after the session get to finish before the run fails."""


LINGERING_KEY = "retrysafe_lingering_threads"
"""Where an xdist worker hands its controller the threads it has left running."""


class LingeringThreadGuard:
    """Fails the run, at once, when non-daemon threads outlive the session.

    The interpreter joins such threads before it exits, so one that waits forever
    (a leaked aiosqlite connection's worker) would hang the run after its summary.
    An xdist worker looks at the end of its session, while it can still tell the
    controller (which fails the run for it), and exits without waiting for them.
    """

    def __init__(self) -> None:
        self.exitstatus = 0
        self.lingering: list[str] = []

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self.exitstatus = int(session.exitstatus)
        workeroutput = getattr(session.config, "workeroutput", None)
        if workeroutput is not None:
            # Runs before xdist's worker sends its workerfinished, which carries this.
            worker = os.environ.get("PYTEST_XDIST_WORKER", "worker")
            workeroutput[LINGERING_KEY] = [
                f"{thread.name} (on {worker})" for thread in _wait_for_threads()
            ]

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        """On the controller: a worker's threads left running count as this run's."""
        self.lingering.extend(getattr(node, "workeroutput", {}).get(LINGERING_KEY, []))

    @pytest.hookimpl(trylast=True)
    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if hasattr(config, "workeroutput"):
            # A worker has waited and reported already; its controller fails the run.
            if _non_daemon_threads():
                os._exit(self.exitstatus or int(pytest.ExitCode.TESTS_FAILED))
            return
        lingering = [*self.lingering, *(thread.name for thread in _wait_for_threads())]
        if not lingering:
            return
        names = ", ".join(sorted(lingering))
        sys.stdout.flush()
        sys.stderr.write(
            f"\nretrysafe tests: {len(lingering)} thread(s) still running after the session "
            f"(a connection or server a test never closed?): {names}. "
            "Failing the run instead of waiting for them.\n"
        )
        sys.stderr.flush()
        os._exit(self.exitstatus or int(pytest.ExitCode.TESTS_FAILED))


def _wait_for_threads() -> list[threading.Thread]:
    """Non-daemon threads still running after up to ``THREAD_GRACE_SECONDS`` of joining them."""
    deadline = time.monotonic() + THREAD_GRACE_SECONDS
    for thread in _non_daemon_threads():
        thread.join(max(0.0, deadline - time.monotonic()))
    return _non_daemon_threads()


def _non_daemon_threads() -> list[threading.Thread]:
    return [
        thread
        for thread in threading.enumerate()
        if thread is not threading.main_thread() and not thread.daemon and thread.is_alive()
    ]


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(ServiceSkipGuard(), "retrysafe-service-skip-guard")
    config.pluginmanager.register(LingeringThreadGuard(), "retrysafe-lingering-thread-guard")
