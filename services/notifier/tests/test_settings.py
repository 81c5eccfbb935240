"""Configuration from the environment."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from herald_notifier.settings import Settings
from herald_testing.messages import LINK_SECRET


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the required link secret is set, whatever the test run's environment."""
    for name in list(os.environ):
        if name.startswith("HERALD_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HERALD_LINK_SECRET", LINK_SECRET.get_secret_value())


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
    assert settings.notifier_sweep_seconds == 5
    assert settings.notifier_crash_at is None  # no crash point unless a crash test sets one
    assert settings.notifier_delivery_record_days == 7
    assert settings.notifier_finished_job_seconds == 0  # a finished job is deleted
    assert (settings.metrics_host, settings.metrics_port) == ("0.0.0.0", 9101)
    assert str(settings.verify_url) == "http://localhost:8000/verify-email"
    assert str(settings.reset_url) == "http://localhost:8000/reset-password"


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


def test_the_link_secret_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HERALD_LINK_SECRET")

    with pytest.raises(ValidationError, match="link_secret"):
        Settings()


def test_a_short_link_secret_is_refused_without_being_shown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    short = "only-31-characters-of-secret-xx"
    monkeypatch.setenv("HERALD_LINK_SECRET", short)

    with pytest.raises(ValidationError, match="link_secret") as refused:
        Settings()

    # The error's text ends up in a crash log: it must not carry the would-be secret.
    assert short not in str(refused.value)


def test_the_link_secret_stays_out_of_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings()

    assert settings.link_secret.get_secret_value() == LINK_SECRET.get_secret_value()
    assert LINK_SECRET.get_secret_value() not in repr(settings)


def test_reads_the_link_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERALD_VERIFY_URL", "https://app.herald.example.org/verify?lang=en")
    monkeypatch.setenv("HERALD_RESET_URL", "https://app.herald.example.org/reset?lang=en")

    settings = Settings()

    assert str(settings.verify_url) == "https://app.herald.example.org/verify?lang=en"
    assert str(settings.reset_url) == "https://app.herald.example.org/reset?lang=en"


@pytest.mark.parametrize("field", ["verify_url", "reset_url"])
@pytest.mark.parametrize(
    "url",
    [
        "ftp://herald.example.org/verify",
        "javascript:alert(1)",
        "/verify-email",
        # The link's token goes in the fragment: there must be none already.
        "https://herald.example.org/verify#",
        "https://herald.example.org/verify#token=",
        "https://user:password@herald.example.org/verify",
    ],
)
def test_rejects_a_link_page_that_cannot_carry_the_token(
    monkeypatch: pytest.MonkeyPatch, field: str, url: str
) -> None:
    monkeypatch.setenv(f"HERALD_{field.upper()}", url)

    with pytest.raises(ValidationError, match=field) as refused:
        Settings()

    # Only the field set is refused: the other page keeps its default.
    assert [error["loc"] for error in refused.value.errors()] == [(field,)]
