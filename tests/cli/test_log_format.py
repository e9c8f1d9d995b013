"""--log-format: JSON lines (the default) or console text, for structlog and uvicorn alike."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from retrysafe.log_config import configure_structlog, json_formatter, uvicorn_log_config


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def test_json_is_one_object_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    configure_structlog("info", "json")
    structlog.get_logger("retrysafe.test").info("request", status=201, request_id="req_1")
    [line] = capsys.readouterr().out.splitlines()
    event = json.loads(line)
    assert event["event"] == "request"
    assert event["status"] == 201
    assert event["request_id"] == "req_1"
    assert event["level"] == "info"
    assert event["timestamp"].endswith("Z")


def test_json_keeps_a_traceback_inside_its_line(capsys: pytest.CaptureFixture[str]) -> None:
    configure_structlog("info", "json")
    try:
        raise ValueError("boom")
    except ValueError:
        structlog.get_logger("retrysafe.test").exception("failed")
    [line] = capsys.readouterr().out.splitlines()
    assert "ValueError: boom" in json.loads(line)["exception"]


def test_console_is_text_for_people(capsys: pytest.CaptureFixture[str]) -> None:
    configure_structlog("info", "console")
    structlog.get_logger("retrysafe.test").info("request", status=201)
    out = capsys.readouterr().out
    assert "request" in out
    assert "status=201" in out
    assert not out.lstrip().startswith("{")


def test_uvicorn_records_become_json_lines_on_stdout() -> None:
    config = uvicorn_log_config("info", "json")
    assert {handler["stream"] for handler in config["handlers"].values()} == {"ext://sys.stdout"}
    assert {handler["formatter"] for handler in config["handlers"].values()} == {"json"}
    record = logging.LogRecord(
        "uvicorn.error", logging.INFO, __file__, 1, "Started server process [%d]", (42,), None
    )
    event = json.loads(json_formatter().format(record))
    assert event["event"] == "Started server process [42]"
    assert event["logger"] == "uvicorn.error"
    assert event["level"] == "info"


def test_console_keeps_uvicorns_own_formatters() -> None:
    config = uvicorn_log_config("info", "console")
    assert "json" not in config["formatters"]
    assert config["handlers"]["default"]["formatter"] == "default"
