"""The notifier's configuration, read from ``HERALD_*`` environment variables."""

from __future__ import annotations

from email.headerregistry import Address, AddressHeader, HeaderRegistry
from typing import Literal, Self

from pydantic import Field, HttpUrl, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from herald_notifier.faults import CrashPoint
from herald_shared.brand import BrandSettings
from herald_shared.settings import CommonSettings, LinkSecret, MetricsPort

SmtpSecurity = Literal["none", "starttls", "tls"]


class Settings(CommonSettings, BrandSettings):
    """Everything the notifier reads from its environment (the brand its emails
    show: ``BrandSettings``, shared with the API's pages)."""

    # The rest of the config (HERALD_ prefix, .env, errors that hide inputs) is
    # CommonSettings'.
    model_config = SettingsConfigDict(frozen=True)

    smtp_host: str = Field(default="127.0.0.1", description="SMTP relay host.")
    smtp_port: int = Field(default=1025, ge=1, le=65535, description="SMTP relay port.")
    smtp_security: SmtpSecurity = Field(
        default="none",
        description="none (plain SMTP), starttls (upgrade after connecting) or tls (implicit TLS).",
    )
    smtp_username: str | None = Field(
        default=None, description="SMTP AUTH user; set together with the password, or neither."
    )
    smtp_password: SecretStr | None = Field(default=None, description="SMTP AUTH password.")
    smtp_timeout: float = Field(
        default=15.0, gt=0, description="Seconds to wait on each SMTP connect or reply."
    )
    smtp_pool_size: int | None = Field(
        default=None,
        ge=0,
        description="SMTP connections kept open between emails for the next ones (default: "
        "HERALD_NOTIFIER_CONCURRENCY, one per job slot); 0 opens and QUITs a connection per email.",
    )
    smtp_pool_idle_seconds: float = Field(
        default=30.0,
        gt=0,
        description="A kept SMTP connection idle this long is closed rather than reused; keep it "
        "below the relay's idle timeout (RFC 5321 servers wait at least 300 s).",
    )
    smtp_pool_max_messages: int = Field(
        default=100,
        ge=1,
        description="Emails sent over one SMTP connection before it is closed and a new one "
        "opened; lower it for a relay that limits messages per connection.",
    )
    mail_from: str = Field(
        default="Herald <no-reply@herald.localhost>",
        description="From header of every email; its domain also names the Message-ID.",
    )
    link_secret: LinkSecret
    verify_url: HttpUrl = Field(
        default=HttpUrl("http://localhost:8000/verify-email"),
        description="The page an email verification link (and an email change confirmation "
        "link) opens; it reads the token and posts it to the API. The link is "
        "{verify_url}?lang={locale}#token={token} (any query of verify_url kept): the token "
        "travels in the URL fragment, which a browser "
        "never sends to a server, so it stays out of request lines, access logs and proxy logs. "
        "An http(s) URL without a fragment or credentials (https in production).",
    )
    reset_url: HttpUrl = Field(
        default=HttpUrl("http://localhost:8000/reset-password"),
        description="The page a password reset link opens; it asks for the new password and "
        "posts it to the API with the token. The link is {reset_url}?lang={locale}#token={token}, "
        "the token "
        "in the fragment as for verify_url. An http(s) URL without a fragment or credentials "
        "(https in production).",
    )
    notifier_concurrency: int = Field(
        default=10, ge=1, description="Jobs one notifier process runs at once."
    )
    metrics_port: MetricsPort = 9101
    notifier_sweep_seconds: int = Field(
        default=5,
        ge=1,
        le=60,
        description="How often SAQ's sweeper looks for stuck jobs (one worker per interval); "
        "part of how soon a crashed worker's jobs run again.",
    )
    notifier_delivery_record_days: int = Field(
        default=7,
        ge=1,
        description="Days a delivery record (sent, skipped, or a crashed claim) is kept: a "
        "redelivery of a message within this window is never sent twice, and the API's outbox "
        "settles a row by its record. Keep it above the longest the scheduler's reconciliation "
        "may be down: a record gone before its row is settled costs one more send "
        "(docs/notifier.md, Retention).",
    )
    notifier_finished_job_seconds: int = Field(
        default=0,
        ge=0,
        description="Seconds a finished job stays readable in Redis (status, result, attempts, "
        "failure note; never its message, address or name), e.g. for SAQ's web UI while "
        "debugging; 0 deletes it as it finishes. What stays of a sent email is its delivery "
        "record.",
    )
    notifier_shutdown_grace_seconds: int = Field(
        default=20,
        ge=0,
        description="On SIGTERM, seconds in-flight sends get to finish before they are cancelled "
        "and re-queued.",
    )
    notifier_crash_at: CrashPoint | None = Field(
        default=None,
        description="Crash tests only: end the process (exit status 70, no cleanup) the first "
        "time it reaches this point of a message's life (herald_notifier.faults). Never set it "
        "in production.",
    )

    @field_validator("smtp_security", mode="before")
    @classmethod
    def _lower_choice(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("mail_from")
    @classmethod
    def _one_mailbox(cls, value: str) -> str:
        parse_mailbox(value)
        return value

    @field_validator("verify_url", "reset_url")
    @classmethod
    def _room_for_the_token(cls, value: HttpUrl) -> HttpUrl:
        if value.fragment is not None:
            raise ValueError("must not have a fragment (#...): the link's token goes there")
        if value.username is not None or value.password is not None:
            raise ValueError("must not contain credentials")
        return value

    @model_validator(mode="after")
    def _credentials_in_pairs(self) -> Self:
        if (self.smtp_username is None) != (self.smtp_password is None):
            raise ValueError("set both HERALD_SMTP_USERNAME and HERALD_SMTP_PASSWORD, or neither")
        return self

    @property
    def sender(self) -> Address:
        """The parsed ``mail_from`` mailbox."""
        return parse_mailbox(self.mail_from)


_HEADERS = HeaderRegistry()


def parse_mailbox(value: str) -> Address:
    """Parse ``"Name <user@domain>"`` or ``"user@domain"`` into one ``Address``.

    Raises ``ValueError`` unless ``value`` is exactly one mailbox with a domain.
    """
    problem = f"must be exactly one mailbox like 'Name <user@domain>', got {value!r}"
    if "\r" in value or "\n" in value:
        raise ValueError("must not contain line breaks")
    try:
        header = _HEADERS("From", value)
    except Exception as exc:
        # The stdlib parser reports most garbage as defects but crashes on some.
        raise ValueError(problem) from exc
    if not isinstance(header, AddressHeader) or header.defects or len(header.addresses) != 1:
        raise ValueError(problem)
    address = header.addresses[0]
    if not address.username or not address.domain:
        raise ValueError(problem)
    return address
