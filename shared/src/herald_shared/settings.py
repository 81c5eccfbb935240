"""``CommonSettings``: the settings every Herald service reads, declared once.

Each service's ``Settings`` extends it with its own fields. The variables keep
their names (``HERALD_REDIS_URL``...); ``metrics_port`` has no common default
(each service listens on a port of its own), so each service declares
``metrics_port: MetricsPort = <its port>``.
"""

from __future__ import annotations

from typing import Annotated, Self
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from herald_shared.logs import LogFormat, LogLevel
from herald_shared.redis_client import RedisTarget, parse_sentinels

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
        default="redis://127.0.0.1:6379/0",
        description="Redis holding the SAQ queues. With HERALD_REDIS_SENTINELS set, only its "
        "scheme (redis:// or rediss:// for TLS), username, password, database and options "
        "are used: the Sentinels give the master's address.",
    )
    redis_sentinels: str = Field(
        default="",
        description="Redis Sentinels to ask for the master, as host:port,host:port "
        "(IPv6 in brackets: [::1]:26379); empty: connect to HERALD_REDIS_URL's host.",
    )
    redis_sentinel_master: str = Field(
        default="",
        description="Name the Sentinels know the master by (their `sentinel monitor` "
        "name, e.g. mymaster); required with HERALD_REDIS_SENTINELS.",
    )
    redis_sentinel_password: SecretStr | None = Field(
        default=None,
        description="Password of the Sentinels themselves (their requirepass), when they "
        "have one; the master's is HERALD_REDIS_URL's.",
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

    @property
    def redis_target(self) -> RedisTarget:
        """Where Redis is, for ``herald_shared.redis_client.redis_client``."""
        password = self.redis_sentinel_password
        return RedisTarget(
            url=self.redis_url,
            sentinels=parse_sentinels(self.redis_sentinels),
            master=self.redis_sentinel_master,
            sentinel_password=password.get_secret_value() if password is not None else None,
        )

    @field_validator("redis_sentinels")
    @classmethod
    def _sentinel_list(cls, value: str) -> str:
        parse_sentinels(value)
        return value

    @model_validator(mode="after")
    def _sentinels_need_a_master(self) -> Self:
        if self.redis_sentinels.strip():
            if not self.redis_sentinel_master.strip():
                raise ValueError(
                    "HERALD_REDIS_SENTINELS is set but HERALD_REDIS_SENTINEL_MASTER is empty: "
                    "give the name the Sentinels monitor the master under"
                )
            if urlsplit(self.redis_url).scheme not in ("redis", "rediss"):
                raise ValueError(
                    "with HERALD_REDIS_SENTINELS, HERALD_REDIS_URL must be redis:// or "
                    "rediss:// (it gives the password and database; Sentinel the address)"
                )
        elif self.redis_sentinel_master.strip():
            raise ValueError(
                "HERALD_REDIS_SENTINEL_MASTER is set but HERALD_REDIS_SENTINELS is empty: "
                "list the Sentinels (host:port,host:port), or unset the master name"
            )
        return self

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower_format(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value
