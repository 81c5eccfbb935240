"""Configuration from the environment."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from herald_notifier.settings import Settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("HERALD_"):
            monkeypatch.delenv(name)


def test_defaults_suit_the_local_stack() -> None:
    settings = Settings()

    assert (settings.smtp_host, settings.smtp_port, settings.smtp_security) == (
        "127.0.0.1",
        1025,
        "none",
    )
    assert settings.sender.addr_spec == "no-reply@herald.localhost"
    assert settings.notifier_concurrency == 10
    assert settings.notifier_shutdown_grace_seconds == 20
    assert (settings.notifier_sweep_seconds, settings.notifier_sweep_abort_wait_seconds) == (5, 1.0)
    assert settings.notifier_delivery_record_days == 30
    assert (settings.metrics_host, settings.metrics_port) == ("0.0.0.0", 9101)


def test_reads_herald_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERALD_SMTP_SECURITY", "STARTTLS")
    monkeypatch.setenv("HERALD_SMTP_USERNAME", "mailer")
    monkeypatch.setenv("HERALD_SMTP_PASSWORD", "s3cret")
    monkeypatch.setenv("HERALD_MAIL_FROM", '"Herald, Inc." <hello@herald.example.org>')
    monkeypatch.setenv("HERALD_LOG_LEVEL", "debug")

    settings = Settings()

    assert settings.smtp_security == "starttls"
    assert settings.smtp_password is not None
    assert settings.smtp_password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)
    assert settings.sender.display_name == "Herald, Inc."
    assert settings.sender.domain == "herald.example.org"
    assert settings.log_level == "DEBUG"


@pytest.mark.parametrize(
    "mail_from",
    ["not an address", "a@example.org, b@example.org", "Herald <no-reply@>", "foo@", "<@>"],
)
def test_rejects_a_mail_from_that_is_not_one_mailbox(
    monkeypatch: pytest.MonkeyPatch, mail_from: str
) -> None:
    monkeypatch.setenv("HERALD_MAIL_FROM", mail_from)

    with pytest.raises(ValidationError, match="mail_from"):
        Settings()


def test_rejects_a_username_without_a_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERALD_SMTP_USERNAME", "mailer")

    with pytest.raises(ValidationError, match="HERALD_SMTP_PASSWORD"):
        Settings()


def test_rejects_an_unknown_security_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERALD_SMTP_SECURITY", "ssl")

    with pytest.raises(ValidationError, match="smtp_security"):
        Settings()
