"""The import rules of docs/architecture.md, held on the package's source and in fresh interpreters.

Static: every import of every module (inside functions and under ``TYPE_CHECKING``
too) is read with ``ast`` and checked against :data:`MAY_IMPORT`. At run time:
the parts that must stay light are imported alone in a subprocess, and
``sys.modules`` must hold none of what they must not load.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "retrysafe"

PARTS: dict[str, tuple[str, ...]] = {
    "client": ("retrysafe", "retrysafe.client"),
    "cli": ("retrysafe.cli", "retrysafe.__main__"),
    "service": ("retrysafe.service",),
    "provider": ("retrysafe.provider",),
    "pipeline": ("retrysafe.pipeline",),
    "library": ("retrysafe.mount", "retrysafe.integrations"),
    "observability": ("retrysafe.observability",),
    "idempotency": ("retrysafe.idempotency",),
    "stores": ("retrysafe.stores",),
    "database": ("retrysafe.database",),
    "asgi": ("retrysafe.asgi", "retrysafe.envelope"),
    "core": ("retrysafe.unique", "retrysafe.ids", "retrysafe.unavailable", "retrysafe.heap"),
    "config": ("retrysafe.settings", "retrysafe.config", "retrysafe.log_config"),
}
"""Each part and the modules (with everything under them) that make it up."""

EVERY_PART = frozenset(PARTS)

MAY_IMPORT: dict[str, frozenset[str]] = {
    "client": frozenset({"client"}),
    "cli": EVERY_PART - {"client"},
    "service": EVERY_PART - {"cli", "client"},
    "provider": frozenset({"provider", "core"}),
    "pipeline": frozenset({"pipeline", "idempotency", "observability", "asgi", "core"}),
    "library": frozenset(
        {"library", "pipeline", "stores", "idempotency", "observability", "config", "asgi", "core"}
    ),
    "observability": frozenset({"observability", "database", "asgi", "core"}),
    "idempotency": frozenset({"idempotency", "core"}),
    "stores": frozenset({"stores", "idempotency", "database", "core"}),
    "database": frozenset({"database", "core"}),
    "asgi": frozenset({"asgi", "core"}),
    "core": frozenset({"core"}),
    "config": frozenset({"config", "core"}),
}
"""The table at the end of docs/architecture.md: the parts each part may import."""

PENDING: dict[tuple[str, str], str] = {}
"""Imports the rules forbid that are still there, each with the issue that removes it."""

ENTRY_POINTS: dict[tuple[str, str], str] = {
    ("retrysafe.asgi", "retrysafe.mount"): "RetrySafe",
    ("retrysafe.asgi", "retrysafe.pipeline.tenancy"): "by_credential, single_tenant",
    ("retrysafe.asgi", "retrysafe.stores.url"): "store_from_url",
}
"""``retrysafe.asgi`` names the library's entry points, for type checkers only.

They are loaded on first use (the module's ``__getattr__``), so at run time the
aliases every layer imports stay a leaf: these imports must sit under
``if TYPE_CHECKING:``, and importing ``retrysafe.asgi`` must load none of them.
"""

SQL = ("sqlalchemy", "aiosqlite", "asyncpg", "alembic")
WEB = ("starlette", "fastapi", "uvicorn")

MAY_NOT_IMPORT_THIRD_PARTY: dict[str, tuple[str, ...]] = {
    "pipeline": (*SQL, "fastapi", "uvicorn"),
    "idempotency": (*SQL, *WEB, "redis"),
    "core": (*SQL, *WEB, "redis", "limits", "structlog"),
}
"""Libraries a part never imports, even inside a function."""

CLIENT_THIRD_PARTY = frozenset({"httpx", "anyio"})


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def part_of(module: str) -> str | None:
    # The longest prefix wins: retrysafe.client is the client, not the package root.
    best: tuple[int, str] | None = None
    for part, prefixes in PARTS.items():
        for prefix in prefixes:
            inside = module == prefix or (module.startswith(prefix + ".") and prefix != "retrysafe")
            if inside and (best is None or len(prefix) > best[0]):
                best = (len(prefix), part)
    return None if best is None else best[1]


def imports(path: Path) -> Iterator[Import]:
    """Every import in ``path``, by the module it names (``from a import b``: a.b when a module)."""
    importer = module_name(path)
    package = importer if path.name == "__init__.py" else importer.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(importer, alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            if base.startswith("retrysafe"):
                # `from retrysafe import config` imports the module retrysafe.config; a
                # name that is not a module (a class) stays in its module's part anyway.
                for alias in node.names:
                    yield Import(importer, f"{base}.{alias.name}", node.lineno)
            else:
                yield Import(importer, base, node.lineno)


MODULES = sorted(PACKAGE.rglob("*.py"))
ALL_IMPORTS = [found for path in MODULES for found in imports(path)]


def test_every_module_belongs_to_a_part() -> None:
    """A new module is placed in a part (here and in docs/architecture.md) before it lands."""
    unplaced = [module_name(path) for path in MODULES if part_of(module_name(path)) is None]
    assert unplaced == []


def test_imports_between_parts_follow_the_rules() -> None:
    broken = []
    for found in ALL_IMPORTS:
        if not found.imported.startswith("retrysafe"):
            continue
        source, target = part_of(found.importer), part_of(found.imported)
        assert source is not None
        assert target is not None, f"{found}: imports a module outside every part"
        if target in MAY_IMPORT[source] or _pending(found) or _entry_point(found):
            continue
        broken.append(
            f"{found.importer}:{found.line} ({source}) imports {found.imported} ({target})"
        )
    assert broken == [], "\n".join(broken)


def within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _entry_point(found: Import) -> bool:
    return any(
        found.importer == importer and within(found.imported, imported)
        for importer, imported in ENTRY_POINTS
    )


def type_checking_lines(path: Path) -> set[int]:
    """Lines of the imports under ``if TYPE_CHECKING:`` in ``path``."""
    lines: set[int] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for inner in node.body:
                if isinstance(inner, ast.Import | ast.ImportFrom):
                    lines.add(inner.lineno)
    return lines


def test_the_entry_points_in_asgi_are_for_type_checkers_only() -> None:
    asgi = PACKAGE / "asgi.py"
    allowed = type_checking_lines(asgi)
    named = [found for found in ALL_IMPORTS if _entry_point(found)]
    assert {(f.importer, f.imported.rpartition(".")[0]) for f in named} == set(ENTRY_POINTS)
    assert [f for f in named if f.line not in allowed] == []
    loaded = loaded_after_importing("retrysafe.asgi")
    assert sorted(m for m in loaded if any(within(m, e) for _, e in ENTRY_POINTS)) == []


def _pending(found: Import) -> bool:
    return any(
        within(found.importer, importer) and within(found.imported, imported)
        for importer, imported in PENDING
    )


def test_pending_exceptions_are_still_needed() -> None:
    """An exception whose import is gone is removed here and from docs/architecture.md."""
    for (importer, imported), why in PENDING.items():
        still = [
            f for f in ALL_IMPORTS if within(f.importer, importer) and within(f.imported, imported)
        ]
        assert still, f"{importer} no longer imports {imported} ({why}): drop the exception"


def test_parts_import_none_of_the_libraries_they_must_not_know() -> None:
    broken = []
    for found in ALL_IMPORTS:
        library = found.imported.partition(".")[0]
        part = part_of(found.importer)
        assert part is not None
        if library in MAY_NOT_IMPORT_THIRD_PARTY.get(part, ()):
            broken.append(f"{found.importer}:{found.line} ({part}) imports {found.imported}")
    assert broken == [], "\n".join(broken)


def test_the_client_imports_only_httpx_anyio_and_the_standard_library() -> None:
    libraries = {
        found.imported.partition(".")[0]
        for found in ALL_IMPORTS
        if part_of(found.importer) == "client" and not found.imported.startswith("retrysafe")
    }
    foreign = libraries - CLIENT_THIRD_PARTY - set(sys.stdlib_module_names) - {"__future__"}
    assert foreign == set()


def test_nothing_imports_the_cli_but_main() -> None:
    importers = {
        found.importer
        for found in ALL_IMPORTS
        if part_of(found.imported) == "cli" and part_of(found.importer) != "cli"
    }
    assert importers == set()


def loaded_after_importing(*modules: str) -> set[str]:
    """The names in ``sys.modules`` after a fresh interpreter imports ``modules``."""
    code = (
        "import importlib, json, sys\n"
        f"for name in {list(modules)!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
    )
    return set(json.loads(result.stdout))


def submodules(package: str) -> list[str]:
    directory = SRC / package.replace(".", "/")
    return sorted(module_name(path) for path in directory.rglob("*.py"))


def top_level(names: set[str]) -> set[str]:
    return {name.partition(".")[0] for name in names}


@pytest.mark.parametrize(
    ("modules", "never"),
    [
        pytest.param(
            ("retrysafe.pipeline",),
            (*SQL, "retrysafe.database", "retrysafe.stores", "retrysafe.service"),
            id="pipeline-knows-no-sql",
        ),
        pytest.param(
            tuple(submodules("retrysafe.idempotency")),
            (*SQL, *WEB, "retrysafe.asgi", "retrysafe.envelope", "retrysafe.database"),
            id="idempotency-knows-no-asgi-or-sql",
        ),
        pytest.param(
            ("retrysafe.stores.memory", "retrysafe.stores.redis"),
            (*SQL, "retrysafe.database", "retrysafe.stores.sql", "retrysafe.service"),
            id="memory-and-redis-stores-load-no-sql",
        ),
        pytest.param(
            ("retrysafe.mount", "retrysafe.stores.url"),
            (*SQL, "fastapi", "uvicorn", "retrysafe.database", "retrysafe.service"),
            id="library-mount-loads-no-sql",
        ),
        pytest.param(
            ("retrysafe",),
            (*SQL, *WEB, "retrysafe.service", "retrysafe.pipeline", "retrysafe.envelope"),
            id="client-loads-no-server",
        ),
        pytest.param(
            ("retrysafe.settings", "retrysafe.config"),
            (*SQL, "limits", "structlog", "retrysafe.database"),
            id="settings-load-no-parsers",
        ),
    ],
)
def test_importing_a_part_loads_none_of_what_it_must_not_know(
    modules: tuple[str, ...], never: tuple[str, ...]
) -> None:
    loaded = loaded_after_importing(*modules)
    found = sorted(banned for banned in never if any(within(name, banned) for name in loaded))
    assert found == [], f"importing {', '.join(modules)} loaded {found}"
