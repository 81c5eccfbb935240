"""An SMTP sink for the benchmark: accepts every message and discards it.

    python -m bench.sink PORT LOG

Runs in its own process so it does not take the notifier's CPU. For each
accepted message it appends ``recipient<TAB>unix_time`` to ``LOG`` (flushed),
so the harness can count deliveries and time signup -> SMTP accepted.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path
from typing import IO, Any

from aiosmtpd.controller import Controller


class Discard:
    def __init__(self, log: IO[str]) -> None:
        self.log = log

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        stamp = time.time()
        for rcpt in envelope.rcpt_tos:
            self.log.write(f"{rcpt}\t{stamp:.6f}\n")
        self.log.flush()
        return "250 2.0.0 discarded"


async def serve(port: int, log_path: Path) -> None:
    with log_path.open("a", encoding="utf-8") as log:
        controller = Controller(Discard(log), hostname="127.0.0.1", port=port)
        controller.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        print("ready", flush=True)
        try:
            await stop.wait()
        finally:
            controller.stop()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), Path(sys.argv[2])))
