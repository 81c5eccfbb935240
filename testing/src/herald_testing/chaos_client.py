"""A signup client that keeps trying, as a real one does while the API is hurt.

A signup that gets no answer (the API was SIGKILLed mid-request), a 5xx (the
database is restarting: 503 with ``Retry-After``) or a 429 is sent again, with
the same address and password, until it is answered ``202`` or a deadline
passes. Sending it again is safe by design: if an earlier attempt had
committed, the retry finds the address taken and its owner gets an "account
exists" notice, never a second welcome email.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

import httpx

from herald_testing.signups import PASSWORD

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
"""Answers after which a client tries again; any other non-202 is a failed signup."""
FIRST_BACKOFF_SECONDS = 0.25
MAX_BACKOFF_SECONDS = 5.0
MAX_RETRY_AFTER_SECONDS = 10.0
"""A ``Retry-After`` above this is waited for only this long (the deadline still holds)."""


@dataclass(frozen=True)
class SignupResult:
    """What became of one address's signup."""

    address: str
    accepted: bool
    attempts: int
    failure: str | None = None
    """Why it was given up (``None`` when accepted)."""
    retried_on: tuple[str, ...] = ()
    """What each attempt before the last got instead of a 202."""


async def sign_up_until_accepted(
    api: httpx.AsyncClient, *, address: str, display_name: str, within: float
) -> SignupResult:
    """Sign ``address`` up, retrying what a client would retry, for up to ``within`` s."""
    deadline = time.monotonic() + within
    body = {"email": address, "password": PASSWORD, "display_name": display_name}
    attempts = 0
    retried_on: list[str] = []
    while True:
        attempts += 1
        retry_after: float | None = None
        try:
            response = await api.post("/api/v1/users", json=body)
        except httpx.HTTPError as exc:
            failure = f"{type(exc).__name__}"
        else:
            if response.status_code == 202:
                return SignupResult(
                    address=address,
                    accepted=True,
                    attempts=attempts,
                    retried_on=tuple(retried_on),
                )
            failure = f"HTTP {response.status_code}"
            if response.status_code not in RETRY_STATUSES:
                return SignupResult(
                    address=address,
                    accepted=False,
                    attempts=attempts,
                    failure=failure,
                    retried_on=tuple(retried_on),
                )
            retry_after = _seconds(response.headers.get("retry-after"))
        backoff = random.uniform(0, min(MAX_BACKOFF_SECONDS, FIRST_BACKOFF_SECONDS * 2**attempts))
        pause = min(retry_after, MAX_RETRY_AFTER_SECONDS) if retry_after is not None else backoff
        if time.monotonic() + pause > deadline:
            return SignupResult(
                address=address,
                accepted=False,
                attempts=attempts,
                failure=f"{failure}, still after {within:.0f} s",
                retried_on=tuple(retried_on),
            )
        retried_on.append(failure)
        await asyncio.sleep(pause)


def _seconds(retry_after: str | None) -> float | None:
    """A ``Retry-After`` given in seconds (an HTTP date is ignored: the backoff applies)."""
    if retry_after is None:
        return None
    try:
        return max(0.0, float(retry_after))
    except ValueError:
        return None
