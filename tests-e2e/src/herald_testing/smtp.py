"""A real SMTP server (aiosmtpd) with a scripted handler, for fault tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from aiosmtpd.controller import Controller

from herald_testing.ports import free_port


@contextlib.contextmanager
def serve_smtp(handler: object) -> Iterator[int]:
    """Run aiosmtpd with ``handler`` on a free port of 127.0.0.1; yields the port."""
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()
