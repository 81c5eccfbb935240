"""The API's internal endpoints, as the scheduler calls them.

The API is the only writer of the accounts database, so periodic work on it
(purging relayed outbox rows, later reminders and purges of accounts) runs in
the API; the scheduler only decides when, and asks over authenticated HTTP.
"""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import SecretStr


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

    async def _post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        response = await self._http.post(path, json=payload)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result
