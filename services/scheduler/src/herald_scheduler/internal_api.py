"""The scheduler's client of the API's internal endpoints (``herald_shared.internal_api``).

Every method raises ``httpx.HTTPError`` when the API cannot be reached or does
not answer 2xx, so the cron run fails and says why.
"""

from __future__ import annotations

from typing import TypeVar

import httpx
from pydantic import BaseModel, SecretStr

from herald_shared import internal_api as contract

__all__ = ["InternalApi"]

Answer = TypeVar("Answer", bound=BaseModel)


class InternalApi:
    """One connection pool to the API, authenticated with the internal token."""

    def __init__(self, *, base_url: str, token: SecretStr, timeout: float) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), headers=contract.authorization(token), timeout=timeout
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def reconcile_outbox(self, *, older_than_seconds: int) -> contract.Reconciled:
        """Check in Redis the unsettled outbox rows last known in flight more than
        ``older_than_seconds`` ago (settle, push again, or wait); what it did."""
        return await self._post(contract.RECONCILE_OUTBOX, older_than_seconds)

    async def purge_outbox(self, *, older_than_seconds: int) -> int:
        """Delete outbox rows settled more than ``older_than_seconds`` ago; the count deleted."""
        return (await self._post(contract.PURGE_OUTBOX, older_than_seconds)).deleted

    async def remind_unverified_users(self, *, older_than_seconds: int) -> int:
        """Send one verification reminder to each user still unverified more than
        ``older_than_seconds`` after signup and never reminded; the count reminded."""
        return (await self._post(contract.REMIND_UNVERIFIED_USERS, older_than_seconds)).reminded

    async def purge_unverified_users(self, *, older_than_seconds: int) -> int:
        """Delete users still unverified more than ``older_than_seconds`` after signup,
        with their tokens; the count of users deleted."""
        return (await self._post(contract.PURGE_UNVERIFIED_USERS, older_than_seconds)).deleted

    async def purge_tokens(self, *, older_than_seconds: int) -> int:
        """Delete verification tokens used or expired more than ``older_than_seconds``
        ago; the count deleted."""
        return (await self._post(contract.PURGE_TOKENS, older_than_seconds)).deleted

    async def purge_idempotency_keys(self, *, older_than_seconds: int) -> int:
        """Delete idempotency keys expired more than ``older_than_seconds`` ago; the count
        deleted."""
        return (await self._post(contract.PURGE_IDEMPOTENCY_KEYS, older_than_seconds)).deleted

    async def purge_sessions(self, *, older_than_seconds: int) -> int:
        """Delete login sessions that ended (revoked, expired or idle) more than
        ``older_than_seconds`` ago; the count deleted."""
        return (await self._post(contract.PURGE_SESSIONS, older_than_seconds)).deleted

    async def _post(self, endpoint: contract.Endpoint[Answer], older_than_seconds: int) -> Answer:
        body = contract.OlderThan(older_than_seconds=older_than_seconds)
        response = await self._http.post(endpoint.url, json=body.model_dump())
        response.raise_for_status()
        return endpoint.answer.model_validate(response.json())
