"""The API's internal endpoints, as the scheduler calls them.

The API is the only writer of the accounts database, so periodic work on it
(reconciling the outbox with Redis and purging its settled rows, reminding and
purging unverified accounts, purging spent verification tokens) runs in the
API; the scheduler only decides when, and asks over authenticated HTTP.

Every method raises ``httpx.HTTPError`` when the API cannot be reached or does
not answer 2xx, so the cron run fails and says why.
"""

from __future__ import annotations

from typing import Any, TypedDict

import httpx
from pydantic import SecretStr


class Reconciliation(TypedDict):
    """What one outbox reconciliation did: rows by outcome, and the oldest unsettled row."""

    delivered: int
    skipped: int
    dead: int
    waiting: int
    repushed: int
    oldest_unsettled_seconds: float


class InternalApi:
    def __init__(self, *, base_url: str, token: SecretStr, timeout: float) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {token.get_secret_value()}"},
            timeout=timeout,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def purge_outbox(self, *, older_than_seconds: int) -> int:
        """Delete relayed outbox rows older than ``older_than_seconds``; the count deleted."""
        body = await self._post(
            "/internal/v1/outbox/purge", {"older_than_seconds": older_than_seconds}
        )
        return int(body["deleted"])

    async def reconcile_outbox(self, *, older_than_seconds: int) -> Reconciliation:
        """Check in Redis the unsettled outbox rows last known in flight more than
        ``older_than_seconds`` ago (settle, push again, or wait); what it did."""
        body = await self._post(
            "/internal/v1/outbox/reconcile", {"older_than_seconds": older_than_seconds}
        )
        return Reconciliation(
            delivered=int(body["delivered"]),
            skipped=int(body["skipped"]),
            dead=int(body["dead"]),
            waiting=int(body["waiting"]),
            repushed=int(body["repushed"]),
            oldest_unsettled_seconds=float(body["oldest_unsettled_seconds"]),
        )

    async def remind_unverified_users(self, *, older_than_seconds: int) -> int:
        """Send one verification reminder to each user still unverified more than
        ``older_than_seconds`` after signup and never reminded; the count reminded."""
        body = await self._post(
            "/internal/v1/users/remind-unverified", {"older_than_seconds": older_than_seconds}
        )
        return int(body["reminded"])

    async def purge_unverified_users(self, *, older_than_seconds: int) -> int:
        """Delete users still unverified more than ``older_than_seconds`` after signup,
        with their tokens; the count of users deleted."""
        body = await self._post(
            "/internal/v1/users/purge-unverified", {"older_than_seconds": older_than_seconds}
        )
        return int(body["deleted"])

    async def purge_tokens(self, *, older_than_seconds: int) -> int:
        """Delete verification tokens used or expired more than ``older_than_seconds``
        ago; the count deleted."""
        body = await self._post(
            "/internal/v1/tokens/purge", {"older_than_seconds": older_than_seconds}
        )
        return int(body["deleted"])

    async def _post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        response = await self._http.post(path, json=payload)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result
