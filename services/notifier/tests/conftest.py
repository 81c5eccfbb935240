"""Fixtures of the notifier's tests: a queue of the test's own and settings aimed at it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from herald_notifier.settings import Settings


@pytest.fixture
def settings_for(redis_url: str, queue_namespace: str) -> Callable[..., Settings]:
    """Notifier settings on this test's queue, sending to ``smtp_host:smtp_port``.

    The metrics server is off: the registry is read in-process, and a port
    bound by one test would stay bound for the whole run.
    """

    def make(*, smtp_port: int, smtp_host: str = "127.0.0.1", **overrides: Any) -> Settings:
        overrides.setdefault("metrics_port", 0)
        return Settings(
            redis_url=redis_url,
            queue_namespace=queue_namespace,
            smtp_host=smtp_host,
            smtp_port=smtp_port,
            smtp_timeout=5.0,
            notifier_shutdown_grace_seconds=0,
            **overrides,
        )

    return make
