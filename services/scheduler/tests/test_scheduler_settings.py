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
        "HERALD_SCHEDULER_SHUTDOWN_GRACE_SECONDS",
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
