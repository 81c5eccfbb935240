"""Deliberate crashes at named points, for crash tests only.

In the contract because the API and the notifier must die alike for their crash tests.

Each service names its own points (a ``Literal`` of its own) and builds a
``Faults`` from a test-only setting (``HERALD_API_CRASH_AT``,
``HERALD_NOTIFIER_CRASH_AT``); unset, no point does anything. An armed
point ends the process with ``CRASH_STATUS`` the first time it is reached,
as a SIGKILL or an OOM kill would there, after one ``fault.crash`` log line.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Generic, NoReturn, TypeVar

import structlog

__all__ = ["CRASH_STATUS", "Faults", "crash"]

CRASH_STATUS = 70
"""Exit status of a deliberate crash (EX_SOFTWARE)."""

P = TypeVar("P", bound=str)

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Faults(Generic[P]):
    """The fault switch of one process: the point it crashes at, if any."""

    crash_at: P | None = None

    def reach(self, point: P, **context: object) -> None:
        """Crash here if this is the armed point; else do nothing."""
        if point == self.crash_at:
            crash(point, **context)


def crash(point: str, **context: object) -> NoReturn:
    """End the process at once, as a crash there would.

    ``os._exit`` runs no cleanup: no ``finally``, no shutdown, no response,
    no commit, no Redis write. Only the log line is flushed first, so the
    test can tell where the process died.
    """
    log.critical("fault.crash", point=point, status=CRASH_STATUS, **context)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(CRASH_STATUS)
