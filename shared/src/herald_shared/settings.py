"""``CommonSettings``: the settings every Herald service reads, declared once.

Each service's ``Settings`` extends it with its own fields. The variables keep
their names (``HERALD_REDIS_URL``...); ``metrics_port`` has no common default
(each service listens on a port of its own), so each service declares
``metrics_port: MetricsPort = <its port>``.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from herald_shared.logs import LogFormat, LogLevel

__all__ = ["CommonSettings", "LinkSecret", "MetricsPort"]

MetricsPort = Annotated[
    int,
    Field(
        ge=0,
        le=65535,
        description="Port of the Prometheus metrics server (GET /metrics); 0 disables it.",
    ),
]
"""The type of ``metrics_port``; a service gives it its default (``= 9101``)."""

LinkSecret = Annotated[
    SecretStr,
    Field(
        min_length=32,
        description="Key that derives the tokens of emailed links from the token ids in queue "
        "messages (HMAC-SHA256, herald_shared.tokens); the API and the notifier must hold the "
        "same value. Required, at least 32 characters, e.g. `openssl rand -base64 48`. Whoever "
        "holds it can make a valid link from any token id; changing it voids every link sent.",
    ),
]
"""The type of ``link_secret``, read by the API (which issues links) and the notifier
(which writes them into emails): required, so it has no default."""


class CommonSettings(BaseSettings):
    """What every service reads from ``HERALD_*``: Redis, the queue namespace, logging,
    the metrics server."""

    # Errors name the variable and the rule, never the value: it may be a secret.
    model_config = SettingsConfigDict(
        env_prefix="HERALD_", env_file=".env", extra="ignore", hide_input_in_errors=True
    )

    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0", description="Redis holding the SAQ queues."
    )
    queue_namespace: str = Field(
        default="",
        description="Prefix of every queue name, so several deployments can share one Redis.",
    )
    log_level: LogLevel = Field(
        default="INFO", description="Lowest level logged (any case: `debug` is DEBUG)."
    )
    log_format: LogFormat = Field(
        default="auto", description="auto (JSON unless stdout is a terminal), json or console."
    )
    metrics_host: str = Field(
        default="0.0.0.0",  # noqa: S104  (scraped from outside the container)
        description="Address the Prometheus metrics server binds.",
    )
    metrics_port: MetricsPort

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower_format(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value
