"""The outbox's internal endpoints, called by the scheduler: purge and reconcile."""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException, status

from herald_api.core.deps import InfrastructureDep
from herald_api.core.errors import BODY_RESPONSES, UNAVAILABLE_RESPONSES
from herald_api.core.internal import Authorized, Deleted, OlderThan, internal_router
from herald_api.outbox import table
from herald_api.outbox.deps import OutboxDep
from herald_api.outbox.metrics import RECONCILE_OUTCOMES
from herald_api.outbox.reconciliation import ReconciliationError
from herald_shared.internal_api import PURGE_OUTBOX, RECONCILE_OUTBOX, Reconciled

router = internal_router()


_UNAVAILABLE = UNAVAILABLE_RESPONSES[status.HTTP_503_SERVICE_UNAVAILABLE]

RECONCILE_RESPONSES: dict[int | str, dict[str, Any]] = BODY_RESPONSES | {
    status.HTTP_503_SERVICE_UNAVAILABLE: _UNAVAILABLE
    | {
        "description": "Redis failed during the pass; what was done before is kept. "
        + _UNAVAILABLE["description"]
    }
}


@router.post(PURGE_OUTBOX.path, responses=BODY_RESPONSES)
async def purge_outbox(
    _: Authorized, body: OlderThan, infrastructure: InfrastructureDep
) -> Deleted:
    """Delete outbox rows settled more than ``older_than_seconds`` ago; rows whose
    delivery is not confirmed (pending or relayed) stay, however old."""
    deleted = await table.purge(infrastructure.sessions, older_than_seconds=body.older_than_seconds)
    return Deleted(deleted=deleted)


@router.post(RECONCILE_OUTBOX.path, responses=RECONCILE_RESPONSES)
async def reconcile_outbox(_: Authorized, body: OlderThan, outbox: OutboxDep) -> Reconciled:
    """Check in Redis every unsettled outbox row last known in flight more than
    ``older_than_seconds`` ago: settle the delivered, skipped and dead ones, push
    the lost ones again, leave the rest for later."""
    try:
        result = await outbox.reconciler.reconcile(unchecked_for=body.age)
    except ReconciliationError as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail=f"Redis failed during the reconciliation: {exc}",
            headers={"Retry-After": "60"},
        ) from exc
    counts = {outcome: result.outcomes[outcome] for outcome in RECONCILE_OUTCOMES}
    return Reconciled(**counts, oldest_unsettled_seconds=result.oldest_unsettled_seconds)
