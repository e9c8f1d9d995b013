"""A newcomer's first commands: which database each one used, listings, --version and -h."""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path

import pytest

from server_process import run_cli

from .conftest import MainRunner

CREATED = "retrysafe: created a new, empty database at "


def notices(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("retrysafe: ")]


@pytest.mark.parametrize(
    "command",
    [
        ("migrate",),
        ("keys", "create", "--org", "acme"),
        ("keys", "list"),
        ("keys", "revoke", "key_0000000000000000"),
        ("orgs", "create", "acme"),
        ("orgs", "list"),
        ("purge-expired",),
        ("logs", "tail", "--no-follow"),
    ],
    ids=lambda command: " ".join(command[:2]),
)
def test_every_command_says_which_database_it_used(
    run_main: MainRunner, tmp_path: Path, command: tuple[str, ...]
) -> None:
    """By its absolute path, on stderr; loudly when it had to create it, quietly after."""
    database = tmp_path / "data" / "first.db"
    url = f"sqlite:///{database}"
    first = run_main(*command, "--database", url)
    [notice, *_] = notices(first.stderr)
    assert notice.startswith(CREATED + str(database)), first.stderr
    assert "a server started elsewhere uses its own" in notice

    again = run_main(*command, "--database", url)
    assert f"retrysafe: database {database}" in notices(again.stderr), again.stderr
    assert CREATED not in again.stderr


def test_the_default_database_is_shown_as_an_absolute_path_and_named_the_default(
    run_main: MainRunner, tmp_path: Path
) -> None:
    """Without --database the working directory decides; the line says so."""
    result = run_main("keys", "list")
    assert result.exit_code == 0, result.stderr
    [notice] = notices(result.stderr)
    assert notice.startswith(f"{CREATED}{tmp_path / 'retrysafe.db'} (the default")


def test_a_database_from_the_environment_is_named_so(run_main: MainRunner, tmp_path: Path) -> None:
    path = tmp_path / "env.db"
    run_main("migrate", "--database", f"sqlite:///{path}")
    result = run_main("orgs", "list", env={"RETRYSAFE_DATABASE": f"sqlite:///{path}"})
    assert result.exit_code == 0, result.stderr
    assert notices(result.stderr) == [f"retrysafe: database {path} (from RETRYSAFE_DATABASE)"]


def test_a_relative_path_is_resolved_against_the_working_directory(
    run_main: MainRunner, tmp_path: Path
) -> None:
    result = run_main("migrate", "--database", "sqlite:///./sub/rel.db")
    assert result.exit_code == 0, result.stderr
    assert notices(result.stderr)[0].startswith(CREATED + str(tmp_path / "sub" / "rel.db"))
    assert f"Database {tmp_path / 'sub' / 'rel.db'} is at the newest schema" in result.stdout


def test_keys_revoke_of_an_unknown_key_on_a_new_database_fails_and_says_it_was_new(
    tmp_path: Path,
) -> None:
    """The classic first-hour mistake, another directory: exit 1, and both lines say why."""
    result = run_cli("keys", "revoke", "key_0123456789abcdef", cwd=tmp_path)
    assert result.returncode == 1
    created, error = result.stderr.strip().splitlines()
    assert created.startswith(CREATED + str(tmp_path / "retrysafe.db"))
    where = tmp_path / "retrysafe.db"
    assert error == f"retrysafe: error: no API key with id 'key_0123456789abcdef' in {where}"
    assert result.stdout == ""


def keys(run_main: MainRunner, db_url: str, *extra: str) -> list[dict[str, object]]:
    result = run_main("keys", "list", "--output", "json", "--database", db_url, *extra)
    assert result.exit_code == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_keys_list_shows_ids_organizations_scopes_and_revocations_never_secrets(
    run_main: MainRunner, tmp_path: Path
) -> None:
    db_url = f"sqlite:///{tmp_path / 'keys.db'}"
    made = run_main("keys", "create", "--org", "acme", "--scopes", "accounts:read,logs:read",
                    "--database", db_url)  # fmt: skip
    secret = made.stdout.splitlines()[-1]
    key_id, _, secret_part = secret.removeprefix("rsk_").partition(".")
    run_main("keys", "create", "--org", "globex", "--database", db_url)
    run_main("keys", "revoke", key_id, "--database", db_url)

    listed = keys(run_main, db_url)
    assert [key["organization"] for key in listed] == ["acme", "globex"]
    first = listed[0]
    assert first["id"] == key_id
    assert first["scopes"] == ["accounts:read", "logs:read"]
    assert str(first["organization_id"]).startswith("org_")
    assert first["created_at"] is not None
    assert first["revoked_at"] is not None
    assert listed[1]["revoked_at"] is None
    assert [key["organization"] for key in keys(run_main, db_url, "--org", "globex")] == ["globex"]

    table = run_main("keys", "list", "--database", db_url)
    header, *rows = table.stdout.splitlines()
    assert header.split() == [
        "id", "organization", "organization_id", "created_at", "revoked_at", "scopes",
    ]  # fmt: skip
    assert [row.split()[0] for row in rows] == [key_id, listed[1]["id"]]
    assert rows[1].split()[4] == "-"  # not revoked
    for output in (table.stdout, json.dumps(listed)):
        assert secret_part not in output
        assert "secret" not in output
        assert "hash" not in output


def test_orgs_list_shows_names_ids_and_quotas(run_main: MainRunner, tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'orgs.db'}"
    run_main("orgs", "create", "zeta", "--database", db_url)
    run_main("orgs", "create", "acme", "--inquiry-quota", "5", "--database", db_url)
    result = run_main("orgs", "list", "--output", "json", "--database", db_url)
    assert result.exit_code == 0, result.stderr
    listed = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(org["name"], org["inquiry_quota"]) for org in listed] == [("acme", 5), ("zeta", None)]
    assert all(str(org["id"]).startswith("org_") for org in listed)

    table = run_main("orgs", "list", "--database", db_url).stdout.splitlines()
    assert table[0].split()[:3] == ["name", "id", "inquiry_quota"]
    assert table[1].split()[2] == "5"
    assert table[2].split()[2] == "-"


def test_version_prints_the_installed_version(tmp_path: Path) -> None:
    result = run_cli("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout == f"retrysafe {version('retrysafe')}\n"
    assert not (tmp_path / "retrysafe.db").exists()


@pytest.mark.parametrize(
    "command", [(), ("serve",), ("keys",), ("keys", "create"), ("logs", "tail")]
)
def test_dash_h_is_help_everywhere(run_main: MainRunner, command: tuple[str, ...]) -> None:
    short, long = run_main(*command, "-h"), run_main(*command, "--help")
    assert short.exit_code == 0
    assert short.stdout == long.stdout
    assert "Usage: retrysafe" in short.stdout
