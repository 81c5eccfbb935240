"""An SMTP relay that refuses some messages on purpose, in front of MailDev.

    python flaky_smtp.py --listen 0.0.0.0:2525 --relay maildev:1025 \
        --refuse-ratio 0.2 --delay-seconds 0.2

Each message is refused with ``451 4.3.0`` (a transient failure the sender must
retry) with probability ``--refuse-ratio``; a recipient whose local part starts
with ``bounce`` is refused with ``550 5.1.1`` (permanent); everything else is
relayed to the real SMTP server. ``--delay-seconds`` makes it take that long
after the message's final "." before relaying and answering, like a real relay
that checks what it is given (``make chaos``: a send lasts long enough for a
SIGKILL to find some in flight). It is a real SMTP server (aiosmtpd), used by
the fault tests and ``make chaos``. A ratio written to ``--ratio-file`` (default
``/tmp/refuse-ratio``) overrides ``--refuse-ratio`` while the file exists.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
from pathlib import Path
from typing import Any

import aiosmtplib
from aiosmtpd.controller import Controller

TRANSIENT = "451 4.3.0 Temporary failure, try again later"
PERMANENT = "550 5.1.1 No such user here"


class FlakyRelay:
    def __init__(
        self,
        *,
        relay_host: str,
        relay_port: int,
        refuse_ratio: float,
        ratio_file: Path,
        delay_seconds: float = 0.0,
    ) -> None:
        self.relay_host = relay_host
        self.delay_seconds = delay_seconds
        self.relay_port = relay_port
        self.default_ratio = refuse_ratio
        self.ratio_file = ratio_file
        self.random = random.Random()

    @property
    def refuse_ratio(self) -> float:
        """The ratio in ``ratio_file`` when it holds one, so tests can turn faults on and off."""
        try:
            return float(self.ratio_file.read_text().strip())
        except (OSError, ValueError):
            return self.default_ratio

    async def handle_RCPT(  # noqa: N802  (aiosmtpd's hook name)
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address.partition("@")[0].lower().startswith("bounce"):
            return PERMANENT
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
        if self.random.random() < self.refuse_ratio:
            return TRANSIENT
        try:
            await aiosmtplib.send(
                envelope.original_content or envelope.content,
                sender=envelope.mail_from,
                recipients=envelope.rcpt_tos,
                hostname=self.relay_host,
                port=self.relay_port,
                start_tls=False,
                timeout=10,
            )
        except (aiosmtplib.SMTPException, OSError):
            return TRANSIENT
        return "250 2.0.0 relayed"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", default="0.0.0.0:2525")
    parser.add_argument("--relay", default="maildev:1025")
    parser.add_argument("--refuse-ratio", type=float, default=0.2)
    parser.add_argument("--ratio-file", type=Path, default=Path("/tmp/refuse-ratio"))
    parser.add_argument("--delay-seconds", type=float, default=0.0)
    args = parser.parse_args()
    host, port = args.listen.rsplit(":", 1)
    relay_host, relay_port = args.relay.rsplit(":", 1)
    handler = FlakyRelay(
        relay_host=relay_host,
        relay_port=int(relay_port),
        refuse_ratio=args.refuse_ratio,
        ratio_file=args.ratio_file,
        delay_seconds=args.delay_seconds,
    )
    controller = Controller(handler, hostname=host, port=int(port))
    controller.start()
    print(f"flaky SMTP on {args.listen} -> {args.relay}, refusing {args.refuse_ratio:.0%}")

    async def wait() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()

    asyncio.run(wait())
    controller.stop()


if __name__ == "__main__":
    main()
