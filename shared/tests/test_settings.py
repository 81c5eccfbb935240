"""CommonSettings: the settings every service reads, declared once."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from herald_shared.settings import CommonSettings, MetricsPort


class ServiceSettings(CommonSettings):
    """A service's Settings as each one declares it: its own metrics port."""

    metrics_port: MetricsPort = 9199


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("HERALD_"):
            monkeypatch.delenv(name)


def test_defaults() -> None:
    settings = ServiceSettings(_env_file=None)

    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.queue_namespace == ""
    assert (settings.log_level, settings.log_format) == ("INFO", "auto")
    assert (settings.metrics_host, settings.metrics_port) == ("0.0.0.0", 9199)


def test_reads_herald_variables_in_any_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERALD_REDIS_URL", "redis://redis:6379/3")
    monkeypatch.setenv("HERALD_QUEUE_NAMESPACE", "staging")
    monkeypatch.setenv("HERALD_LOG_LEVEL", "warning")
    monkeypatch.setenv("HERALD_LOG_FORMAT", "JSON")
    monkeypatch.setenv("HERALD_METRICS_PORT", "0")

    settings = ServiceSettings(_env_file=None)

    assert (settings.redis_url, settings.queue_namespace) == ("redis://redis:6379/3", "staging")
    assert (settings.log_level, settings.log_format) == ("WARNING", "json")
    assert settings.metrics_port == 0


@pytest.mark.parametrize(("name", "value"), [("log_level", "LOUD"), ("metrics_port", 65536)])
def test_rejects_a_bad_value_without_showing_it(name: str, value: object) -> None:
    with pytest.raises(ValidationError, match=name) as refused:
        ServiceSettings.model_validate({name: value})

    # A rejected value may be a secret: the error names the field, never the input.
    assert str(value) not in str(refused.value)


def test_the_metrics_port_has_no_common_default() -> None:
    with pytest.raises(ValidationError, match="metrics_port"):
        CommonSettings(_env_file=None)


def test_sentinels_are_off_by_default() -> None:
    target = ServiceSettings(_env_file=None).redis_target

    assert (target.url, target.sentinels, target.master) == ("redis://127.0.0.1:6379/0", (), "")


def test_sentinel_variables_give_the_redis_target(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERALD_REDIS_URL", "rediss://:master-secret@ignored:1/2")
    monkeypatch.setenv("HERALD_REDIS_SENTINELS", " sentinel-1:26379, [fd00::5]:26380 ")
    monkeypatch.setenv("HERALD_REDIS_SENTINEL_MASTER", "mymaster")
    monkeypatch.setenv("HERALD_REDIS_SENTINEL_PASSWORD", "sentinel-secret")

    target = ServiceSettings(_env_file=None).redis_target

    assert target.sentinels == (("sentinel-1", 26379), ("fd00::5", 26380))
    assert (target.master, target.sentinel_password) == ("mymaster", "sentinel-secret")
    assert target.url == "rediss://:master-secret@ignored:1/2"


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        (
            {"HERALD_REDIS_SENTINELS": "a:1,host:notaport", "HERALD_REDIS_SENTINEL_MASTER": "m"},
            "HERALD_REDIS_SENTINELS entry 2 of 2 has no port number 1-65535",
        ),
        (
            {"HERALD_REDIS_SENTINELS": "a:26379,,b:1", "HERALD_REDIS_SENTINEL_MASTER": "m"},
            "HERALD_REDIS_SENTINELS entry 2 of 3 must be host:port",
        ),
        (
            {"HERALD_REDIS_SENTINELS": "sentinel:99999", "HERALD_REDIS_SENTINEL_MASTER": "m"},
            "entry 1 of 1 has no port number 1-65535",
        ),
        (
            {"HERALD_REDIS_SENTINELS": "sentinel:26379"},
            "HERALD_REDIS_SENTINEL_MASTER is empty",
        ),
        (
            {"HERALD_REDIS_SENTINEL_MASTER": "mymaster"},
            "HERALD_REDIS_SENTINELS is empty",
        ),
        (
            {
                "HERALD_REDIS_SENTINELS": "sentinel:26379",
                "HERALD_REDIS_SENTINEL_MASTER": "m",
                "HERALD_REDIS_URL": "unix:///run/redis.sock",
            },
            "HERALD_REDIS_URL must be redis:// or rediss://",
        ),
    ],
)
def test_bad_sentinel_settings_say_what_to_fix(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], expected: str
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)

    with pytest.raises(ValidationError, match=expected) as refused:
        ServiceSettings(_env_file=None)

    assert "notaport" not in str(refused.value)
