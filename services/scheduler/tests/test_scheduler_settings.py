"""The scheduler's settings, read from the environment."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from herald_scheduler.settings import Settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "HERALD_REDIS_URL",
        "HERALD_QUEUE_NAMESPACE",
        "HERALD_LOG_LEVEL",
        "HERALD_LOG_FORMAT",
        "HERALD_QUEUE_REPORT_CRON",
        "HERALD_OUTBOX_RECONCILE_CRON",
        "HERALD_OUTBOX_RECONCILE_AFTER_SECONDS",
        "HERALD_VERIFICATION_REMINDER_CRON",
        "HERALD_VERIFICATION_REMINDER_AFTER_SECONDS",
        "HERALD_UNVERIFIED_PURGE_CRON",
        "HERALD_UNVERIFIED_ACCOUNT_DAYS",
        "HERALD_TOKEN_PURGE_CRON",
        "HERALD_TOKEN_RETENTION_SECONDS",
        "HERALD_IDEMPOTENCY_KEY_PURGE_CRON",
        "HERALD_IDEMPOTENCY_KEY_RETENTION_SECONDS",
        "HERALD_SESSION_PURGE_CRON",
        "HERALD_SESSION_RETENTION_SECONDS",
        "HERALD_SCHEDULER_SHUTDOWN_GRACE_SECONDS",
        "HERALD_INTERNAL_TOKEN",
        "HERALD_METRICS_HOST",
        "HERALD_METRICS_PORT",
        "HERALD_MONITOR_HOST",
        "HERALD_MONITOR_PORT",
        "HERALD_MONITOR_USER",
        "HERALD_MONITOR_PASSWORD",
    ):
        monkeypatch.delenv(name, raising=False)


def test_defaults() -> None:
    settings = Settings(_env_file=None)

    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.queue_namespace == ""
    assert settings.log_level == "INFO"
    assert settings.log_format == "auto"
    assert settings.queue_report_cron == "* * * * *"
    assert settings.scheduler_shutdown_grace_seconds == 2
    assert (settings.metrics_host, settings.metrics_port) == ("0.0.0.0", 9102)
    assert (settings.monitor_host, settings.monitor_port) == ("127.0.0.1", 8080)
    assert settings.monitor_user == "admin"
    assert settings.monitor_password is None
    assert settings.verification_reminder_cron == "*/10 * * * *"
    assert settings.verification_reminder_after_seconds == 24 * 3600
    assert settings.unverified_purge_cron == "15 * * * *"
    assert settings.unverified_account_days == 7
    assert settings.unverified_account_seconds == 7 * 24 * 3600
    assert settings.token_purge_cron == "45 * * * *"
    assert settings.token_retention_seconds == 24 * 3600
    assert settings.idempotency_key_purge_cron == "35 * * * *"
    assert settings.idempotency_key_retention_seconds == 60
    assert settings.session_purge_cron == "25 3 * * *"
    assert settings.session_retention_seconds == 7 * 24 * 3600
    assert settings.outbox_reconcile_cron == "* * * * *"
    assert settings.outbox_reconcile_after_seconds == 300


def test_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERALD_QUEUE_REPORT_CRON", " */5 * * * * ")
    monkeypatch.setenv("HERALD_LOG_LEVEL", "debug")
    monkeypatch.setenv("HERALD_SCHEDULER_SHUTDOWN_GRACE_SECONDS", "7")

    settings = Settings(_env_file=None)

    assert settings.queue_report_cron == "*/5 * * * *"
    assert settings.log_level == "DEBUG"
    assert settings.scheduler_shutdown_grace_seconds == 7


def test_accepts_a_seconds_field() -> None:
    assert Settings(_env_file=None, queue_report_cron="* * * * * */10").queue_report_cron


@pytest.mark.parametrize("cron", ["nope", "61 * * * *", "* * * *", ""])
def test_rejects_an_invalid_cron_string(monkeypatch: pytest.MonkeyPatch, cron: str) -> None:
    monkeypatch.setenv("HERALD_QUEUE_REPORT_CRON", cron)

    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None)

    [error] = caught.value.errors()
    assert error["loc"] == ("queue_report_cron",)
    assert f"not a valid cron string: {cron!r}" in error["msg"]


def test_rejects_a_negative_grace_period() -> None:
    with pytest.raises(ValidationError, match="scheduler_shutdown_grace_seconds"):
        Settings(_env_file=None, scheduler_shutdown_grace_seconds=-1)


def test_the_monitor_password_is_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERALD_MONITOR_PASSWORD", "a long monitor secret")

    settings = Settings(_env_file=None)

    assert settings.monitor_password is not None
    assert settings.monitor_password.get_secret_value() == "a long monitor secret"
    assert "a long monitor secret" not in repr(settings)


@pytest.mark.parametrize("user", ["", "ad:min"])
def test_rejects_a_monitor_user_basic_auth_cannot_carry(user: str) -> None:
    with pytest.raises(ValidationError, match="monitor_user"):
        Settings(_env_file=None, monitor_user=user)


def test_reads_the_account_jobs_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERALD_VERIFICATION_REMINDER_CRON", "* * * * * */5")
    monkeypatch.setenv("HERALD_VERIFICATION_REMINDER_AFTER_SECONDS", "60")
    monkeypatch.setenv("HERALD_UNVERIFIED_PURGE_CRON", "* * * * * */7")
    monkeypatch.setenv("HERALD_UNVERIFIED_ACCOUNT_DAYS", "1")
    monkeypatch.setenv("HERALD_TOKEN_PURGE_CRON", "* * * * * */9")
    monkeypatch.setenv("HERALD_TOKEN_RETENTION_SECONDS", "90")
    monkeypatch.setenv("HERALD_SESSION_PURGE_CRON", "* * * * * */11")
    monkeypatch.setenv("HERALD_SESSION_RETENTION_SECONDS", "120")

    settings = Settings(_env_file=None)

    assert settings.verification_reminder_cron == "* * * * * */5"
    assert settings.verification_reminder_after_seconds == 60
    assert settings.unverified_purge_cron == "* * * * * */7"
    assert settings.unverified_account_seconds == 24 * 3600
    assert settings.token_purge_cron == "* * * * * */9"
    assert settings.token_retention_seconds == 90
    assert settings.session_purge_cron == "* * * * * */11"
    assert settings.session_retention_seconds == 120


@pytest.mark.parametrize(
    "name",
    [
        "verification_reminder_cron",
        "unverified_purge_cron",
        "token_purge_cron",
        "idempotency_key_purge_cron",
        "session_purge_cron",
    ],
)
def test_rejects_an_invalid_account_job_cron(name: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings.model_validate({name: "61 * * * *"})

    [error] = caught.value.errors()
    assert error["loc"] == (name,)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        # The API refuses ages under a minute or over 100 years.
        ("verification_reminder_after_seconds", 59),
        ("token_retention_seconds", 59),
        ("token_retention_seconds", 100 * 365 * 24 * 3600 + 1),
        ("idempotency_key_retention_seconds", 59),
        ("outbox_retention_seconds", 100 * 365 * 24 * 3600 + 1),
        ("session_retention_seconds", 59),
        ("unverified_account_days", 0),
        ("unverified_account_days", 100 * 365 + 1),
    ],
)
def test_rejects_an_age_the_api_would_refuse(name: str, value: int) -> None:
    with pytest.raises(ValidationError, match=name):
        Settings.model_validate({name: value})


@pytest.mark.parametrize("reminder_after", [24 * 3600, 2 * 24 * 3600])
def test_rejects_a_reminder_no_sooner_than_the_purge(reminder_after: int) -> None:
    with pytest.raises(ValidationError, match="deleted before their reminder"):
        Settings(
            _env_file=None,
            verification_reminder_after_seconds=reminder_after,
            unverified_account_days=1,
        )


def test_an_empty_internal_token_is_no_token(monkeypatch: pytest.MonkeyPatch) -> None:
    # Compose passes an unset variable through as "": the API reads it as "no token" too.
    monkeypatch.setenv("HERALD_INTERNAL_TOKEN", "")

    assert Settings(_env_file=None).internal_token is None


def test_rejects_an_internal_token_the_api_would_refuse(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERALD_INTERNAL_TOKEN", "only-15-chars-x")

    with pytest.raises(ValidationError, match="internal_token") as refused:
        Settings(_env_file=None)

    assert "only-15-chars-x" not in str(refused.value)
