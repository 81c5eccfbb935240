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

import os
import sys
from dataclasses import dataclass
from typing import Literal, NoReturn

import structlog

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

CRASH_STATUS = 70
"""Exit status of a deliberate crash (EX_SOFTWARE, as the notifier's)."""

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Faults:
    """The fault switch of one API process: the point it crashes at, if any."""

    crash_at: CrashPoint | None = None

    def reach(self, point: CrashPoint, **context: object) -> None:
        """Crash here if this is the armed point; else do nothing."""
        if point == self.crash_at:
            crash(point, **context)


NO_FAULTS = Faults()
"""The switch of every process not under a crash test."""


def crash(point: CrashPoint, **context: object) -> NoReturn:
    """End the process at once, as a crash there would.

    ``os._exit`` runs no cleanup: no ``finally``, no lifespan shutdown, no
    response, no commit. Only the log line is flushed first, so the test can
    tell where the process died.
    """
    log.critical("fault.crash", point=point, status=CRASH_STATUS, **context)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(CRASH_STATUS)
