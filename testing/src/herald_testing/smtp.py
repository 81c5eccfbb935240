"""A real SMTP server (aiosmtpd) with a scripted handler, for fault tests."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import threading
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

from herald_testing.ports import free_port


@contextlib.contextmanager
def serve_smtp(handler: object, port: int | None = None) -> Iterator[int]:
    """Run aiosmtpd with ``handler`` on ``port`` (default: a free one) of 127.0.0.1;
    yields the port. A given port brings a relay back on the same address after a restart."""
    port = port or free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


class ScriptedRelay:
    """An aiosmtpd handler answering RCPT TO from a script, then accepting.

    ``rcpt_replies`` are returned, in order, to the first RCPT commands (e.g.
    ``"451 4.3.0 try later"``, ``"550 5.1.1 no such user"``); later ones are
    accepted. With ``hold_data`` each DATA waits until ``release`` is set (at
    most 10 s). Accepted messages are parsed into ``received``.
    """

    def __init__(self, rcpt_replies: list[str] | None = None, *, hold_data: bool = False) -> None:
        self.rcpt_replies = list(rcpt_replies or [])
        self.hold_data = hold_data
        self.release = threading.Event()
        self.received: list[EmailMessage] = []

    async def handle_RCPT(  # noqa: N802  (aiosmtpd's hook name)
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if self.rcpt_replies:
            return self.rcpt_replies.pop(0)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        if self.hold_data:
            await asyncio.to_thread(self.release.wait, 10.0)
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.received.append(parsed)
        return "250 2.0.0 queued"
