"""Logging setup shared by every Herald service.

structlog renders JSON when stdout is not a TTY (containers, CI) and a console
format otherwise. Standard-library loggers (uvicorn, SAQ, SQLAlchemy) go
through the same renderer, and context bound with
``structlog.contextvars`` (``request_id``, ``message_id``) appears on every
line, so one signup can be followed from the API log into the notifier log.

SAQ logs a failed job whole ("Error processing job Job<... kwargs: ...>"),
which for Herald means a person's address and name; every service's SAQ lines
name a job by its function, key and attempts instead. (At DEBUG SAQ also
writes full jobs into its "Processing"/"Finished" lines: DEBUG logs hold
personal data.)
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog
from saq import Job
from structlog.typing import Processor

__all__ = ["LogFormat", "LogLevel", "abridge_jobs", "configure_logging"]

LogFormat = Literal["auto", "json", "console"]
"""How log lines are rendered: ``auto`` is JSON unless stdout is a terminal."""

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
"""The lowest level a service logs (``HERALD_LOG_LEVEL``)."""


def configure_logging(*, service: str, level: str = "INFO", fmt: LogFormat = "auto") -> None:
    """Configure structlog and the standard library for ``service``."""
    json_output = fmt == "json" or (fmt == "auto" and not sys.stdout.isatty())
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_service(service),
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer() if json_output else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info if json_output else _identity,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn installs its own handlers; route them through ours instead.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("saq").addFilter(abridge_jobs)


def abridge_jobs(record: logging.LogRecord) -> bool:
    """Show a SAQ ``Job`` in a log line without its kwargs (the message, with
    the recipient's address and name), status, result or error."""
    if isinstance(record.args, tuple) and any(isinstance(arg, Job) for arg in record.args):
        record.args = tuple(
            arg.info(full=False) if isinstance(arg, Job) else arg for arg in record.args
        )
    return True


def _add_service(service: str) -> Processor:
    def processor(
        _logger: object, _method: str, event_dict: structlog.typing.EventDict
    ) -> structlog.typing.EventDict:
        event_dict.setdefault("service", service)
        return event_dict

    return processor


def _identity(
    _logger: object, _method: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    return event_dict
