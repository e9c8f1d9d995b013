"""Run the command line in this process, for the many fast checks of bad input."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from retrysafe.cli import main


@dataclass(frozen=True)
class Outcome:
    exit_code: int
    stdout: str
    stderr: str


MainRunner = Callable[..., Outcome]


@pytest.fixture
def run_main(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> MainRunner:
    """``retrysafe ARGS`` through :func:`retrysafe.cli.main`, in ``tmp_path``, clean environment.

    ``uvicorn.Server.run`` (and ``uvicorn.run``) is replaced by a failure, so input
    that wrongly passes the checks fails the test instead of serving forever.
    """
    import uvicorn

    def refuse_to_serve(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("serve got past its input checks")

    monkeypatch.setattr(uvicorn, "run", refuse_to_serve)
    monkeypatch.setattr(uvicorn.Server, "run", refuse_to_serve)
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("RETRYSAFE_"):
            monkeypatch.delenv(name)

    def run(*args: str, env: dict[str, str] | None = None) -> Outcome:
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        monkeypatch.setattr(sys, "argv", ["retrysafe", *args])
        capsys.readouterr()
        with pytest.raises(SystemExit) as exited:
            main()
        captured = capsys.readouterr()
        code = exited.value.code
        return Outcome(code if isinstance(code, int) else 0, captured.out, captured.err)

    return run
