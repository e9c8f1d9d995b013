"""Settings from RETRYSAFE_* variables: the path ``serve --workers N`` configures workers by."""

from __future__ import annotations

from pathlib import Path

import pytest

from retrysafe.config import ConfigError, check, settings_from_env, settings_to_env
from retrysafe.settings import Settings


def test_defaults_without_variables() -> None:
    """No RETRYSAFE_* variable means the documented defaults."""
    assert settings_from_env({}) == Settings()


def test_every_server_flag_reads_its_variable() -> None:
    """Each variable lands in its Settings field, typed."""
    settings = settings_from_env(
        {
            "RETRYSAFE_DATABASE": "postgresql://u:p@db.example/retrysafe",
            "RETRYSAFE_REDIS": "redis://cache:6379/0",
            "RETRYSAFE_RATE_LIMIT": "5 per minute",
            "RETRYSAFE_IDEMPOTENCY_TTL": "60",
            "RETRYSAFE_MAX_BODY": "2048",
            "RETRYSAFE_MAX_UPLOAD": "4096",
            "RETRYSAFE_REQUEST_TIMEOUT": "2.5",
            "RETRYSAFE_MAX_IN_FLIGHT": "7",
            "RETRYSAFE_PROVIDER_URL": "http://127.0.0.1:8001",
            "RETRYSAFE_DOCUMENT_DIR": "/srv/docs",
        }
    )
    assert settings == Settings(
        database_url="postgresql://u:p@db.example/retrysafe",
        redis_url="redis://cache:6379/0",
        rate_limit="5 per minute",
        idempotency_ttl=60,
        max_body=2048,
        max_upload=4096,
        request_timeout=2.5,
        max_in_flight=7,
        provider_url="http://127.0.0.1:8001",
        document_dir=Path("/srv/docs"),
    )


@pytest.mark.parametrize(
    "settings",
    [
        Settings(),
        Settings(redis_url="rediss://cache:6380", provider_url="https://p.example", max_body=1),
        Settings(database_url="sqlite:////var/lib/retrysafe.db", request_timeout=0.25),
    ],
)
def test_round_trip_through_variables(settings: Settings) -> None:
    """What the parent process exports, every worker rebuilds exactly."""
    assert settings_from_env(settings_to_env(settings)) == settings


def test_unset_optional_urls_override_the_shell() -> None:
    """A None URL is exported as empty, so a stale variable cannot sneak into workers."""
    env = settings_to_env(Settings())
    assert env["RETRYSAFE_REDIS"] == ""
    assert settings_from_env(env).redis_url is None


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"RETRYSAFE_MAX_BODY": "lots"}, "RETRYSAFE_MAX_BODY must be an integer"),
        ({"RETRYSAFE_REQUEST_TIMEOUT": "soon"}, "RETRYSAFE_REQUEST_TIMEOUT must be a number"),
        ({"RETRYSAFE_MAX_UPLOAD": "-1"}, "--max-upload / RETRYSAFE_MAX_UPLOAD must be at least 1"),
        ({"RETRYSAFE_MAX_IN_FLIGHT": "0"}, "RETRYSAFE_MAX_IN_FLIGHT must be at least 1"),
        ({"RETRYSAFE_IDEMPOTENCY_TTL": "0"}, "RETRYSAFE_IDEMPOTENCY_TTL must be at least 1"),
        ({"RETRYSAFE_REQUEST_TIMEOUT": "0"}, "RETRYSAFE_REQUEST_TIMEOUT must be more than 0"),
        ({"RETRYSAFE_DATABASE": "mysql://db/x"}, "got the 'mysql' scheme"),
        ({"RETRYSAFE_DATABASE": "retrysafe.db"}, "must be a URL such as sqlite:///"),
        ({"RETRYSAFE_REDIS": "http://cache"}, "RETRYSAFE_REDIS must be a redis://"),
        ({"RETRYSAFE_PROVIDER_URL": "ftp://p"}, "RETRYSAFE_PROVIDER_URL must be a http://"),
        ({"RETRYSAFE_RATE_LIMIT": "fast"}, "RETRYSAFE_RATE_LIMIT must be one rate"),
        ({"RETRYSAFE_RATE_LIMIT": "0/second"}, "RETRYSAFE_RATE_LIMIT must be one rate"),
        ({"RETRYSAFE_RATE_LIMIT": "1/second;9/hour"}, "RETRYSAFE_RATE_LIMIT must be one rate"),
    ],
)
def test_bad_values_name_the_variable(variables: dict[str, str], message: str) -> None:
    """Each unusable value is refused with a message that names what to fix."""
    with pytest.raises(ConfigError) as caught:
        settings_from_env(variables)
    assert message in str(caught.value)


def test_check_accepts_async_driver_urls() -> None:
    """Explicit async drivers are the same databases and stay accepted."""
    check(Settings(database_url="postgresql+asyncpg://u@h/db"))
    check(Settings(database_url="sqlite+aiosqlite:///x.db"))
