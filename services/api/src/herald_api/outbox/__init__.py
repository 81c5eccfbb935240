"""The transactional outbox: a message is staged in the transaction of the change that
causes it, pushed to Redis right after the commit (the fast path), or else by the relay;
the reconciliation settles each row once Redis shows its message's fate.

Domains stage and publish through ``Dispatcher``; the composition root opens the
parts with ``open_outbox``. docs/api.md explains the design.
"""

from herald_api.outbox.deps import OutboxDep
from herald_api.outbox.dispatch import Dispatcher, RelayedMarks
from herald_api.outbox.models import OutboxMessage
from herald_api.outbox.reconciliation import Reconciler
from herald_api.outbox.relay import Relay
from herald_api.outbox.runtime import Outbox, open_outbox

__all__ = [
    "Dispatcher",
    "Outbox",
    "OutboxDep",
    "OutboxMessage",
    "Reconciler",
    "Relay",
    "RelayedMarks",
    "open_outbox",
]
