"""Deliberate crashes at named points of a message's life in the API, for crash tests only.

``HERALD_API_CRASH_AT=<point>`` makes the API process end at once, as a
SIGKILL or an OOM kill would, the first time it reaches that point; unset (the
default) no point does anything (``HERALD_FAULT_EXIT_AFTER_COMMIT=true``, the
older switch, is ``after_commit``). Only the crash-test subclasses of the outbox's
parts (``outbox.crashing``, installed by ``outbox.open_outbox`` when a point is
set) reach the points: the code requests run holds no switch.
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

- ``after_commit``: a message and the change causing it committed (a signup's
  user and welcome email, say), nothing pushed;
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
