"""Each server option is declared once and reaches the server by flag, by variable and in workers.

The values are made from the declarations (one non-default value per option,
chosen by its type), so an option added to ``Settings`` is covered here without
editing this file; only a string option with a syntax rule needs an example below.
"""

from __future__ import annotations

import enum
import os
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from retrysafe.cli import serve as serve_module
from retrysafe.config import SERVER_OPTIONS, DeclaredOption, settings_from_env, settings_to_env
from retrysafe.settings import LogFormat, Settings
from server_process import ServerProcess, start_server

from .conftest import MainRunner

README = Path(__file__).resolve().parents[2] / "README.md"
TABLE_START = "<!-- configuration table: generated from retrysafe.settings -->"
TABLE_END = "<!-- end of the configuration table -->"

EXAMPLES = {
    "database_url": "postgresql://u:p@db.example:5433/other",
    "redis_url": "redis://cache.example:6380/2",
    "idempotency_store": "redis://cache.example:6380/3",
    "rate_limit": "7 per minute",
    "auth_failure_limit": "3/hour",
    "provider_url": "http://127.0.0.1:9",
}
"""Non-default values for the options whose text must follow a syntax (URL, rate)."""


def other_value(option: DeclaredOption) -> Any:
    """A usable value of ``option`` that is not its default."""
    if option.field in EXAMPLES:
        return EXAMPLES[option.field]
    default, kind = option.default, option.kind
    if kind is bool:
        return not default
    if issubclass(kind, enum.Enum):
        return next(member for member in kind if member != default)
    if kind is int:
        high = option.option.maximum
        return default - 1 if high is not None and default >= high else default + 1
    if kind is float:
        return default * 2 + 0.25
    if kind is Path:
        return Path("/srv/elsewhere") / default.name
    if kind is str and option.option.rule is None:
        return f"{default}-other" if default else "other"
    raise AssertionError(f"add a non-default example for {option.field} to EXAMPLES")


def flag_text(value: Any) -> str:
    return value.value if isinstance(value, enum.Enum) else str(value)


NON_DEFAULT = {option.field: other_value(option) for option in SERVER_OPTIONS}


def test_the_declarations_cover_every_flag_and_the_values_here_differ() -> None:
    """Every option has a distinct flag and variable, and each value above is not its default."""
    flags = [option.flag for option in SERVER_OPTIONS]
    assert len(set(flags)) == len(flags)
    assert {"database", "port", "workers", "log-level", "log-format"} <= set(flags)
    for option in SERVER_OPTIONS:
        assert NON_DEFAULT[option.field] != option.default, option.field


def test_every_option_round_trips_through_the_worker_variables() -> None:
    """What ``serve`` exports for its workers, a worker rebuilds exactly, for every option."""
    settings = replace(Settings(), **NON_DEFAULT)
    assert settings_from_env(settings_to_env(settings)) == settings
    assert settings_from_env(settings_to_env(Settings())) == Settings()


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[Settings]:
    """The Settings ``serve`` would run, captured instead of migrating and serving."""
    captured: list[Settings] = []
    monkeypatch.setattr(serve_module, "run_with_database", lambda *_args, **_kwargs: None)
    monkeypatch.setattr(serve_module, "run_server", captured.append)
    return captured


def test_every_option_is_a_serve_flag(run_main: MainRunner, served: list[Settings]) -> None:
    """``serve --flag value`` for every declared option lands each value in its field."""
    args: list[str] = []
    for option in SERVER_OPTIONS:
        value = NON_DEFAULT[option.field]
        if option.kind is bool:
            assert value is True  # the switch is off by default; the flag turns it on
            args.append(f"--{option.flag}")
        else:
            args += [f"--{option.flag}", flag_text(value)]
    result = run_main("serve", *args)
    assert result.exit_code == 0, result.stderr
    assert served == [replace(Settings(), **NON_DEFAULT)]


def test_every_option_reads_its_variable(run_main: MainRunner, served: list[Settings]) -> None:
    """``RETRYSAFE_<FLAG>`` for every declared option lands each value in its field."""
    env = {option.env: flag_text(NON_DEFAULT[option.field]) for option in SERVER_OPTIONS}
    result = run_main("serve", env=env)
    assert result.exit_code == 0, result.stderr
    assert served == [replace(Settings(), **NON_DEFAULT)]


def test_a_flag_wins_over_its_variable(run_main: MainRunner, served: list[Settings]) -> None:
    result = run_main("serve", "--max-body", "77", env={"RETRYSAFE_MAX_BODY": "99"})
    assert result.exit_code == 0, result.stderr
    assert served[0].max_body == 77


def test_serve_help_shows_every_option_with_its_variable(run_main: MainRunner) -> None:
    result = run_main("serve", "--help")
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())  # help wraps lines at the terminal width
    for option in SERVER_OPTIONS:
        assert f"--{option.flag}" in text
        assert option.env in text


def test_the_readme_configuration_table_is_generated_from_the_declarations() -> None:
    """The README's table is ``configuration_table()``; UPDATE_README=1 rewrites it."""
    from retrysafe.config import configuration_table

    text = README.read_text()
    before, start, rest = text.partition(TABLE_START + "\n")
    table, end, after = rest.partition(TABLE_END)
    assert start, f"README.md lost the marker {TABLE_START!r}"
    assert end, f"README.md lost the marker {TABLE_END!r}"
    if os.environ.get("UPDATE_README") == "1":
        README.write_text(before + start + configuration_table() + end + after)
        table = configuration_table()
    assert table == configuration_table(), (
        "README.md's configuration table differs from the declarations in "
        "retrysafe/settings.py; run UPDATE_README=1 pytest tests/cli/test_options.py"
    )


def worker_environments(server: ServerProcess, count: int) -> list[dict[str, str]]:
    """The environments the server's ``count`` worker processes were started with (Linux)."""
    deadline = time.monotonic() + 30
    while True:
        children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children")
        workers = []
        for pid in children.read_text().split():
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                if b"spawn_main" not in cmdline.read():
                    continue  # multiprocessing's resource tracker, not a worker
            with open(f"/proc/{pid}/environ", "rb") as environ:
                entries = environ.read().split(b"\0")
            pairs = (entry.decode().partition("=") for entry in entries if b"=" in entry)
            workers.append({name: value for name, _, value in pairs})
        if len(workers) == count or time.monotonic() > deadline:
            return workers
        time.sleep(0.1)


@pytest.mark.slow
def test_workers_run_the_settings_of_every_type(tmp_path: Path) -> None:
    """``serve --workers 2`` with a non-default int, float, str, bool, path, URL and enum.

    Each worker process rebuilds exactly those settings from its environment, and
    they act: the body limit, the rate limit and the console log format.
    """
    documents = tmp_path / "docs"
    args = {
        "--max-body": "64",
        "--request-timeout": "7.5",
        "--rate-limit": "77/minute",
        "--document-dir": str(documents),
        "--provider-url": "http://127.0.0.1:9",
        "--log-format": "console",
        "--database": f"sqlite:///{tmp_path / 'workers.db'}",
    }
    argv = [*(part for pair in args.items() for part in pair), "--api-log-bodies", "--workers", "2"]
    server = start_server(argv, cwd=tmp_path)
    try:
        server.wait_healthy(timeout=45)
        expected = replace(
            Settings(),
            port=server.port,
            workers=2,
            max_body=64,
            request_timeout=7.5,
            rate_limit="77/minute",
            document_dir=documents,
            provider_url="http://127.0.0.1:9",
            log_format=LogFormat.CONSOLE,
            database_url=args["--database"],
            api_log_bodies=True,
        )
        environments = worker_environments(server, 2)
        assert len(environments) == 2, server.log()
        for environ in environments:
            assert settings_from_env(environ) == expected
        for _ in range(4):  # several requests, so both workers are likely to answer one
            big = {"data": {"attributes": {"name_first": "x" * 100}}}
            too_big = httpx.post(f"{server.base_url}/api/v1/accounts", json=big, timeout=10)
            assert too_big.status_code == 413
            limited = httpx.get(f"{server.base_url}/api/v1/accounts", timeout=10)
            assert limited.headers["RateLimit-Limit"] == "77"
    finally:
        server.stop()
    # Console lines are text (`… [info     ] …`), not JSON objects.
    assert re.search(r"\[\s*info\s*\]", server.log()), server.log()
    assert '"level": "info"' not in server.log()
