"""Deliberate failures, switched on by settings, for fault tests only."""

from __future__ import annotations

import os
import sys
from typing import NoReturn

import structlog

log = structlog.get_logger(__name__)

EXIT_AFTER_COMMIT_STATUS = 70
"""Exit status of ``exit_after_commit`` (EX_SOFTWARE)."""


def exit_after_commit(**context: str) -> NoReturn:
    """End the process at once, as a crash (SIGKILL, OOM) between commit and push would.

    ``os._exit`` runs no cleanup: no ``finally``, no lifespan shutdown, no
    response. Only the log line is flushed first, so the test can tell why.
    """
    log.critical("fault.exit_after_commit", status=EXIT_AFTER_COMMIT_STATUS, **context)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_AFTER_COMMIT_STATUS)
