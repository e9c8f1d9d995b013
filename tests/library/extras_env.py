"""What `pip install .` and `pip install '.[EXTRA]'` would install, without installing anything.

:func:`project_metadata` asks setuptools for the METADATA a wheel of the current
``pyproject.toml`` would carry. :func:`site_with_only` lays out a directory holding
exactly the distributions an extra requires (their files are symlinked from this
virtualenv, which the test extra fills), so that a fresh interpreter started with
``-S`` on that directory sees the library as a user who installed only that extra
would: a module missing from the extra is an ``ImportError`` there, not a silent pass.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from email.message import Message
from email.parser import Parser
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
PROJECT = "retrysafe"


def project_metadata(work: Path) -> Message:
    """The METADATA setuptools prepares for a wheel of the working tree's pyproject.toml.

    Only ``pyproject.toml`` and ``README.md`` are copied (with an empty package), so
    the answer reflects the file as it is now, not an earlier editable install.
    """
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, work / name)
    package = work / "src" / PROJECT
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    out = work / "metadata"
    out.mkdir()
    program = (
        "import sys\n"
        "from setuptools import build_meta\n"
        "print(build_meta.prepare_metadata_for_build_wheel(sys.argv[1]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program, str(out)],
        cwd=work,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    dist_info = result.stdout.strip().splitlines()[-1]
    return Parser().parsestr((out / dist_info / "METADATA").read_text())


def requirements(metadata: Message) -> list[Requirement]:
    return [Requirement(value) for value in metadata.get_all("Requires-Dist") or []]


def required_by(metadata: Message, extras: frozenset[str]) -> list[Requirement]:
    """The project's requirements that installing it with ``extras`` pulls in (one level)."""
    chosen = []
    for requirement in requirements(metadata):
        marker = requirement.marker
        if marker is None or any(marker.evaluate({"extra": extra}) for extra in extras):
            chosen.append(requirement)
    return chosen


def distributions_for(metadata: Message, extras: frozenset[str]) -> set[str]:
    """Every third-party distribution (canonical name) installing the project with ``extras`` needs.

    Self-references (``retrysafe[asgi]``) expand into those extras; each third-party
    requirement is followed through the metadata of the version installed here.
    """
    wanted: set[str] = set()
    pending = list(required_by(metadata, extras))
    seen_extras = set(extras)
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        if name == PROJECT:
            new = set(requirement.extras) - seen_extras
            seen_extras |= new
            pending.extend(required_by(metadata, frozenset(new)))
            continue
        if name in wanted:
            continue
        wanted.add(name)
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            raise AssertionError(f"{name} is required but not installed in this venv") from None
        for sub in map(Requirement, dist.requires or []):
            marker = sub.marker
            environment = [{"extra": extra} for extra in requirement.extras] or [{"extra": ""}]
            if marker is None or any(marker.evaluate(env) for env in environment):
                pending.append(sub)
    return wanted


def site_with_only(site: Path, names: set[str]) -> Path:
    """``site``, holding symlinks to the files of exactly the distributions ``names``."""
    site.mkdir(parents=True, exist_ok=True)
    for name in sorted(names):
        dist = distribution(name)
        base = Path(str(dist.locate_file("")))
        for top in sorted({Path(str(f)).parts[0] for f in dist.files or []}):
            if top == ".." or top.endswith(".pth") or top == "__pycache__":
                continue  # scripts outside site-packages; .pth files need the site module
            target = site / top
            if not target.exists():
                target.symlink_to(base / top)
    return site


def run_isolated(site: Path, program: str) -> subprocess.CompletedProcess[str]:
    """``program`` in a fresh interpreter that sees only the stdlib, ``site`` and ``src``.

    ``-S`` keeps this virtualenv's site-packages off ``sys.path``; ``-E`` ignores
    ``PYTHONPATH`` and friends.
    """
    bootstrap = f"import sys\nsys.path[:0] = [{str(SRC)!r}, {str(site)!r}]\n"
    return subprocess.run(
        [sys.executable, "-S", "-E", "-c", bootstrap + program],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
