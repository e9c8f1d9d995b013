"""Log lines of in-process servers stay out of pytest's own output (``-q`` stays dots).

Test servers run in threads and log after the test that made a request may have
finished, while pytest prints its progress with capture suspended; anything they
write to stdout lands between the dots. tests/conftest.py routes structlog
through stdlib logging instead, where pytest captures per test.
"""

from __future__ import annotations

import logging
import time

import httpx
import pytest
import structlog
from tests.conftest import LiveServer

from retrysafe import log_config


def test_structlog_events_reach_logging_not_the_terminal(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="retrysafe")
    structlog.get_logger("retrysafe.request").info("request", status=200)
    assert capfd.readouterr() == ("", "")
    [record] = caplog.records
    assert record.name == "retrysafe.request"
    assert "event='request'" in record.getMessage()
    assert "status=200" in record.getMessage()


def test_a_server_thread_writes_nothing_to_stdout_or_stderr(
    server: LiveServer, capfd: pytest.CaptureFixture[str]
) -> None:
    """A request's log line, written by the server's own thread, goes to no terminal."""
    capfd.readouterr()
    assert httpx.get(f"{server.api_url}/accounts", timeout=10).status_code == 401
    time.sleep(0.3)  # the request line is written after the response is sent
    assert capfd.readouterr() == ("", "")


@pytest.mark.parametrize("step", ["serve configured structlog", "the next test"])
def test_a_test_that_configures_structlog_does_not_leak_into_the_next(
    step: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """``serve`` in-process configures structlog for stdout; the next test starts quiet."""
    if step == "serve configured structlog":
        log_config.configure_structlog("info", "json")
        return
    structlog.get_logger("retrysafe.request").info("request")
    assert capfd.readouterr() == ("", "")
