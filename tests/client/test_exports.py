"""``import retrysafe`` is the client only: curated exports, and no server stack imported."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import types
from pathlib import Path

import retrysafe
from retrysafe import client as client_package

SRC = Path(__file__).resolve().parents[2] / "src"
SERVER_MODULES = ("fastapi", "sqlalchemy", "starlette", "uvicorn", "alembic", "limits", "redis")


def imported_after(statement: str) -> list[str]:
    """Top-level module names imported by ``statement`` in a fresh interpreter."""
    program = (
        "import sys, json\n"
        f"{statement}\n"
        "print(json.dumps(sorted({name.split('.')[0] for name in sys.modules})))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(SRC)},
        timeout=60,
    )
    return list(json.loads(result.stdout))


def test_import_retrysafe_pulls_in_no_server_module() -> None:
    """A process that only calls the API must not pay for (or need) the server's frameworks."""
    modules = imported_after("import retrysafe")
    assert [name for name in SERVER_MODULES if name in modules] == []


def test_from_retrysafe_import_client_pulls_in_no_server_module() -> None:
    modules = imported_after("from retrysafe import Client, AsyncClient\nClient(api_key='k')")
    assert [name for name in SERVER_MODULES if name in modules] == []


def test_all_is_sorted_and_curated() -> None:
    """Like httpx: one sorted list, and exactly the public names the module defines."""
    assert retrysafe.__all__ == sorted(retrysafe.__all__)
    public = {
        name
        for name, value in vars(retrysafe).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    public -= {"annotations"}
    assert public == set(retrysafe.__all__)
    for name in retrysafe.__all__:
        assert getattr(retrysafe, name) is getattr(client_package, name)


def test_every_exported_exception_descends_from_retrysafe_error() -> None:
    exceptions = [
        value
        for value in map(retrysafe.__dict__.get, retrysafe.__all__)
        if inspect.isclass(value) and issubclass(value, BaseException)
    ]
    assert len(exceptions) >= 13
    assert all(issubclass(cls, retrysafe.RetrysafeError) for cls in exceptions)


def test_exception_tree_is_drawn_in_the_errors_docstring() -> None:
    """The module docstring is the map of the tree; every class must be on it."""
    from retrysafe.client import _errors

    doc = _errors.__doc__ or ""
    for name in retrysafe.__all__:
        value = getattr(retrysafe, name)
        if inspect.isclass(value) and issubclass(value, BaseException):
            assert name in doc, name
