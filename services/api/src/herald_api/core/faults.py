"""Deliberate crashes at named points of a message's life in the API, for crash tests only.

``HERALD_API_CRASH_AT=<point>`` makes the API process end at once, as a
SIGKILL or an OOM kill would, the first time it reaches that point; unset (the
default) no point does anything. (``HERALD_FAULT_EXIT_AFTER_COMMIT=true``, the
older switch, is ``after_commit``.) The crash-point tests
(``services/api/tests/test_crash_points.py``) run a real API with it, let it
die there, and check that the message is still delivered: once, or
deduplicated by the job key and the notifier's delivery record. Never lost.
"""

from __future__ import annotations

from typing import Literal

from herald_shared import faults
from herald_shared.faults import CRASH_STATUS, crash

__all__ = ["CRASH_STATUS", "NO_FAULTS", "CrashPoint", "Faults", "crash"]

CrashPoint = Literal[
    "after_commit",
    "after_push",
    "before_relayed_mark",
    "relay_after_push",
    "reconcile_after_push",
]
"""Where the API can be made to crash:

- ``after_commit``: a signup committed its user and outbox row, nothing pushed;
- ``after_push``: the fast path's push was accepted by Redis, the row not yet
  queued for its relayed mark;
- ``before_relayed_mark``: the batched relayed marks are about to be written;
- ``relay_after_push``: the relay pushed a row of its batch, its transaction
  (marking the batch relayed) not yet committed;
- ``reconcile_after_push``: the reconciliation pushed a lost message again,
  its transaction (counting the re-push) not yet committed.
"""

Faults = faults.Faults[CrashPoint]
"""The fault switch of one API process (``herald_shared.faults``)."""

NO_FAULTS: Faults = Faults()
"""The switch of every process not under a crash test."""
