"""``keys``, ``orgs``, ``migrate`` and ``purge-expired`` as real processes on a SQLite file."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from pathlib import Path

import pytest

from retrysafe.service.api_keys import ALL_SCOPES
from server_process import run_cli

from .conftest import MainRunner


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "cli.db"


@pytest.fixture
def db_url(db_path: Path) -> str:
    return f"sqlite:///{db_path}"


def query(db_path: Path, sql: str, *params: object) -> list[tuple[object, ...]]:
    with sqlite3.connect(db_path) as conn:
        return conn.execute(sql, params).fetchall()


DATABASE_NOTICES = ("retrysafe: database ", "retrysafe: created a new, empty database ")


def assert_one_line_error(stderr: str) -> None:
    """One ``retrysafe: error:`` line, after at most the line naming the database used."""
    assert "Traceback" not in stderr
    lines = [line for line in stderr.strip().splitlines() if not line.startswith(DATABASE_NOTICES)]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("retrysafe: error: ")
    assert len(stderr.strip().splitlines()) <= 2, stderr


def create_key(tmp_path: Path, db_url: str, *extra: str) -> tuple[str, str]:
    """Run ``keys create`` and return (stdout, secret printed on its last line)."""
    result = run_cli("keys", "create", "--org", "acme", "--database", db_url, *extra, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return result.stdout, result.stdout.rstrip("\n").splitlines()[-1]


def test_keys_create_prints_secret_last_and_stores_only_its_hash(
    tmp_path: Path, db_path: Path, db_url: str
) -> None:
    """The secret is the last stdout line, shown once; the database holds only its SHA-256."""
    stdout, secret = create_key(tmp_path, db_url)
    assert secret.startswith("rsk_key_")
    key_id, _, secret_part = secret.removeprefix("rsk_").partition(".")
    earlier = stdout.rstrip("\n").splitlines()[:-1]
    assert any(key_id in line for line in earlier)
    assert any("acme" in line for line in earlier)

    rows = query(db_path, "SELECT id, secret_hash, revoked_at FROM api_keys")
    assert rows == [(key_id, hashlib.sha256(secret_part.encode()).hexdigest(), None)]
    stored = b"".join(path.read_bytes() for path in tmp_path.glob("cli.db*"))
    assert secret_part.encode() not in stored


def test_keys_create_makes_the_organization_once(
    tmp_path: Path, db_path: Path, db_url: str
) -> None:
    """The organization is created when absent and reused for later keys."""
    create_key(tmp_path, db_url)
    create_key(tmp_path, db_url)
    assert query(db_path, "SELECT count(*) FROM organizations WHERE name = 'acme'") == [(1,)]
    org_ids = query(db_path, "SELECT DISTINCT organization_id FROM api_keys")
    assert len(org_ids) == 1
    assert query(db_path, "SELECT count(*) FROM api_keys") == [(2,)]


def test_keys_create_defaults_to_every_scope(tmp_path: Path, db_path: Path, db_url: str) -> None:
    """Without --scopes the key may do everything."""
    create_key(tmp_path, db_url)
    [(scopes,)] = query(db_path, "SELECT scopes FROM api_keys")
    assert all(scope in str(scopes) for scope in ALL_SCOPES)


def test_keys_create_with_chosen_scopes(tmp_path: Path, db_path: Path, db_url: str) -> None:
    """--scopes narrows the key to the listed scopes (spaces around commas allowed)."""
    create_key(tmp_path, db_url, "--scopes", "accounts:read, inquiries:write")
    [(scopes,)] = query(db_path, "SELECT scopes FROM api_keys")
    granted = {scope for scope in ALL_SCOPES if scope in str(scopes)}
    assert granted == {"accounts:read", "inquiries:write"}


@pytest.mark.parametrize("scopes", ["accounts:read,accounts:delete", "admin", ",", ""])
def test_keys_create_refuses_unknown_scopes(
    run_main: MainRunner, db_path: Path, db_url: str, scopes: str
) -> None:
    """An unknown or empty scope list is a usage error (2) naming the valid scopes; no key."""
    result = run_main("keys", "create", "--org", "acme", "--scopes", scopes, "--database", db_url)
    assert result.exit_code == 2
    assert_one_line_error(result.stderr)
    assert "accounts:write" in result.stderr
    assert result.stdout == ""
    assert not db_path.exists()


def test_unknown_scope_in_a_real_process_is_one_line(tmp_path: Path, db_path: Path) -> None:
    """The installed entry point prints the same single line: no traceback escapes."""
    result = run_cli(
        "keys",
        "create",
        "--org",
        "acme",
        "--scopes",
        "root",
        "--database",
        f"sqlite:///{db_path}",
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert_one_line_error(result.stderr)
    assert "unknown scope 'root'" in result.stderr


def test_keys_revoke(tmp_path: Path, db_path: Path, db_url: str) -> None:
    """Revoking marks the key revoked; it is reported on stdout."""
    _, secret = create_key(tmp_path, db_url)
    key_id = secret.removeprefix("rsk_").partition(".")[0]
    result = run_cli("keys", "revoke", key_id, "--database", db_url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert key_id in result.stdout
    [(revoked_at,)] = query(db_path, "SELECT revoked_at FROM api_keys WHERE id = ?", key_id)
    assert revoked_at is not None


def test_keys_revoke_unknown_id_fails(tmp_path: Path, db_url: str) -> None:
    """An id that names no key is an error (1) that repeats the id and names the database."""
    create_key(tmp_path, db_url)
    result = run_cli("keys", "revoke", "key_0000000000000000", "--database", db_url, cwd=tmp_path)
    assert result.returncode == 1
    assert_one_line_error(result.stderr)
    assert "no API key with id 'key_0000000000000000' in " in result.stderr
    assert result.stderr.strip().endswith(str(tmp_path / "cli.db"))


def test_orgs_create_with_inquiry_quota(tmp_path: Path, db_path: Path, db_url: str) -> None:
    """--inquiry-quota is stored on the new organization."""
    result = run_cli(
        "orgs", "create", "globex", "--inquiry-quota", "5", "--database", db_url, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "globex" in result.stdout
    rows = query(db_path, "SELECT inquiry_quota FROM organizations WHERE name = 'globex'")
    assert rows == [(5,)]


def test_orgs_create_without_quota_is_unlimited(tmp_path: Path, db_path: Path, db_url: str) -> None:
    result = run_cli("orgs", "create", "initech", "--database", db_url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert query(db_path, "SELECT inquiry_quota FROM organizations") == [(None,)]


def test_orgs_create_existing_sets_the_quota_only_when_given(
    tmp_path: Path, db_path: Path, db_url: str
) -> None:
    """On an existing name, --inquiry-quota updates the quota; without it nothing changes."""
    run_cli("orgs", "create", "globex", "--inquiry-quota", "5", "--database", db_url, cwd=tmp_path)

    unchanged = run_cli("orgs", "create", "globex", "--database", db_url, cwd=tmp_path)
    assert unchanged.returncode == 0, unchanged.stderr
    assert "already exists; nothing changed" in unchanged.stdout
    assert query(db_path, "SELECT inquiry_quota FROM organizations") == [(5,)]

    raised = run_cli(
        "orgs", "create", "globex", "--inquiry-quota", "9", "--database", db_url, cwd=tmp_path
    )
    assert raised.returncode == 0, raised.stderr
    assert "inquiry quota set to 9" in raised.stdout
    assert query(db_path, "SELECT name, inquiry_quota FROM organizations") == [("globex", 9)]


@pytest.mark.parametrize("quota", ["-1", "many"])
def test_orgs_create_refuses_bad_quota(run_main: MainRunner, db_url: str, quota: str) -> None:
    """A negative or non-numeric quota is a usage error."""
    result = run_main("orgs", "create", "globex", "--inquiry-quota", quota, "--database", db_url)
    assert result.exit_code == 2
    assert "--inquiry-quota" in result.stderr


def test_migrate_creates_and_is_idempotent(tmp_path: Path, db_path: Path) -> None:
    """migrate creates missing parent directories and the schema; running it again is a no-op."""
    nested = tmp_path / "data" / "nested.db"
    url = f"sqlite:///{nested}"
    first = run_cli("migrate", "--database", url, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    version = query(nested, "SELECT version_num FROM alembic_version")
    tables = {row[0] for row in query(nested, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"organizations", "api_keys", "accounts", "idempotency_records"} <= tables

    second = run_cli("migrate", "--database", url, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert query(nested, "SELECT version_num FROM alembic_version") == version


def test_default_database_is_retrysafe_db_in_the_working_directory(tmp_path: Path) -> None:
    """Without --database every command uses ./retrysafe.db."""
    result = run_cli("migrate", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "retrysafe.db").exists()


def test_database_from_environment(tmp_path: Path) -> None:
    """RETRYSAFE_DATABASE stands in for --database."""
    path = tmp_path / "from-env.db"
    result = run_cli("migrate", cwd=tmp_path, env={"RETRYSAFE_DATABASE": f"sqlite:///{path}"})
    assert result.returncode == 0, result.stderr
    assert path.exists()
    assert not (tmp_path / "retrysafe.db").exists()


def test_purge_expired_deletes_only_expired_records(
    tmp_path: Path, db_path: Path, db_url: str
) -> None:
    """purge-expired removes records past their expiry and prints how many it removed."""
    assert run_cli("migrate", "--database", db_url, cwd=tmp_path).returncode == 0
    now = time.time()
    with sqlite3.connect(db_path) as conn:
        conn.executemany(
            "INSERT INTO idempotency_records (organization_id, key, fingerprint, status,"
            " response_status, response_body, created_at, expires_at)"
            " VALUES ('org_1', ?, 'f', 'completed', 201, x'7b7d', ?, ?)",
            [
                ("old-1", now - 100, now - 10),
                ("old-2", now - 100, now - 1),
                ("live", now, now + 3600),
            ],
        )
    result = run_cli("purge-expired", "--database", db_url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Purged 2 " in result.stdout
    assert query(db_path, "SELECT key FROM idempotency_records") == [("live",)]

    again = run_cli("purge-expired", "--database", db_url, cwd=tmp_path)
    assert "Purged 0 " in again.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("migrate", "--database", "mysql://db/retrysafe"), "'mysql' scheme"),
        (("migrate", "--database", "./retrysafe.db"), "must be a URL such as"),
        (("purge-expired", "--database", "oracle://db"), "'oracle' scheme"),
        (("keys", "create", "--org", "  ", "--database", "sqlite:///x.db"), "1 to 200 characters"),
        (("orgs", "create", "x" * 201, "--database", "sqlite:///x.db"), "1 to 200 characters"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    run_main: MainRunner, args: tuple[str, ...], expected: str
) -> None:
    result = run_main(*args)
    assert result.exit_code == 2
    assert_one_line_error(result.stderr)
    assert expected in result.stderr


def test_unreachable_database_is_one_line_without_the_password(tmp_path: Path) -> None:
    """A database that cannot be reached is an error (1) that hides the password."""
    url = "postgresql://retrysafe:hunter2@127.0.0.1:1/retrysafe"
    result = run_cli("migrate", "--database", url, cwd=tmp_path)
    assert result.returncode == 1
    assert_one_line_error(result.stderr)
    assert "cannot use the database postgresql://retrysafe:***@127.0.0.1:1" in result.stderr
    assert "hunter2" not in result.stderr
