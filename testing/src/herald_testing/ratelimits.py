"""What the API's rate-limit tests read: a 429 as a client sees it, and the fail-open
counter of an action."""

from __future__ import annotations

import httpx
from prometheus_client import REGISTRY

FAIL_OPEN_REASONS = ("timeout", "redis", "paused", "other")


def assert_too_many(response: httpx.Response, *, window_seconds: int) -> int:
    """Assert ``response`` is a 429 with a ``Retry-After`` within the limit's window and
    the detail that says it; its ``Retry-After``."""
    assert response.status_code == 429
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= window_seconds
    unit = "second" if retry_after == 1 else "seconds"
    assert response.json() == {"detail": f"Too many attempts; try again in {retry_after} {unit}."}
    return retry_after


def let_through(action: str) -> float:
    """How many ``action`` checks were let through unchecked (fail open), every reason."""
    return sum(
        REGISTRY.get_sample_value(
            "herald_api_rate_limit_fail_open_total", {"action": action, "reason": reason}
        )
        or 0.0
        for reason in FAIL_OPEN_REASONS
    )
