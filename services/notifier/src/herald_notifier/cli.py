"""``herald-notifier``: the notifier worker, and its dead letters.

    herald-notifier                      run the worker until SIGINT/SIGTERM
    herald-notifier run                  the same
    herald-notifier dead-letters list [--json]
    herald-notifier dead-letters replay MESSAGE_ID... | --all
    herald-notifier preview KIND|all [--locale L] [--out DIR]

``list`` prints one line per dead letter, oldest first: failed_at,
message_id, task, attempts, reason (``--json``: one JSON object per line,
payload included). ``replay`` re-enqueues letters and removes each once SAQ
accepted it; it exits 1 if any letter was kept (still malformed, unknown,
already in flight) or not found. ``preview`` writes sample emails
(``{KIND}.{locale}.eml`` and ``.html``) for a designer and prints their paths;
it needs no Redis, relay or configuration (``herald_notifier.preview``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import structlog
from saq import Worker

from herald_notifier.dead_letters import replay
from herald_notifier.preview import KINDS, preview_renderer, write_previews
from herald_notifier.settings import Settings
from herald_notifier.worker import build_settings, connect_queue
from herald_shared.locales import LOCALES
from herald_shared.logs import configure_logging

log = structlog.get_logger(__name__)


def parser() -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(
        prog="herald-notifier",
        description="Herald's notifier: sends account emails from the notifier queue.",
    )
    commands = cli.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("run", help="run the worker until SIGINT/SIGTERM (the default)")
    letters = commands.add_parser("dead-letters", help="list or replay jobs that failed for good")
    actions = letters.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="one line per dead letter, oldest first")
    listing.add_argument(
        "--json", action="store_true", help="one JSON object per line, payload included"
    )
    again = actions.add_parser(
        "replay", help="re-enqueue dead letters; each is removed once SAQ took its job"
    )
    again.add_argument("message_ids", nargs="*", metavar="MESSAGE_ID")
    again.add_argument("--all", action="store_true", help="every dead letter")
    preview = commands.add_parser(
        "preview", help="write sample emails (.eml and .html) for a designer to look at"
    )
    preview.add_argument("kind", metavar="KIND", choices=[*KINDS, "all"], help=", ".join(KINDS))
    preview.add_argument(
        "--locale", choices=LOCALES, help="one language (default: every one: en, de, es)"
    )
    preview.add_argument(
        "--out",
        type=Path,
        default=Path("email-previews"),
        help="folder (default: ./email-previews)",
    )
    return cli


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line, configure logging from the environment, run."""
    cli = parser()
    args = cli.parse_args(argv)
    replaying = args.command == "dead-letters" and args.action == "replay"
    if replaying and bool(args.all) == bool(args.message_ids):
        cli.error("dead-letters replay: give MESSAGE_IDs or --all (not both)")
    if args.command == "preview":
        kinds = list(KINDS) if args.kind == "all" else [args.kind]
        locales = list(LOCALES) if args.locale is None else [args.locale]
        for path in write_previews(
            kinds=kinds, locales=locales, out=args.out, renderer=preview_renderer()
        ):
            print(path)
        return
    settings = Settings()
    if args.command in (None, "run"):
        configure_logging(service="notifier", level=settings.log_level, fmt=settings.log_format)
        logging.getLogger("saq").addFilter(quiet_job_lines)
        # No log line shows the process, thread or process name: spare every
        # record their lookups (a getpid() system call among them).
        logging.logProcesses = logging.logThreads = logging.logMultiprocessing = False
        asyncio.run(run(build_settings(settings)))
        return
    # Output on stdout, logs on stderr: `list --json` must stay parseable.
    with contextlib.redirect_stdout(sys.stderr):
        configure_logging(service="notifier", level="WARNING", fmt=settings.log_format)
    if args.action == "list":
        asyncio.run(list_dead_letters(settings, as_json=args.json))
    else:
        ids = None if args.all else list(args.message_ids)
        sys.exit(asyncio.run(replay_dead_letters(settings, ids)))


_JOB_LINES = frozenset({"Processing %s", "Finished %s"})


def quiet_job_lines(record: logging.LogRecord) -> bool:
    """Keep SAQ's per-job "Processing" and "Finished" lines for DEBUG. At INFO
    they name a job (not its status: SAQ shows that at DEBUG only) and the
    handler's ``email.*`` line says more, with the message and request ids;
    they were two thirds of the notifier's logging CPU. Failures and retries
    keep their own lines (SAQ's "Error processing job", "Retrying")."""
    return (
        record.levelno != logging.INFO
        or record.msg not in _JOB_LINES
        or logging.getLogger().isEnabledFor(logging.DEBUG)
    )


async def run(worker_settings: dict[str, Any]) -> None:
    """Run a worker until SIGINT/SIGTERM, then let in-flight jobs finish within
    the grace period."""
    worker: Worker[Any] = Worker(**worker_settings)
    await worker.queue.connect()
    try:
        log.info("notifier.started", queue=worker.queue.name, concurrency=worker.concurrency)
        # Worker.start installs its own SIGINT/SIGTERM handlers and stops gracefully.
        await worker.start()
    finally:
        await worker.queue.disconnect()
        log.info("notifier.stopped")


async def list_dead_letters(settings: Settings, *, as_json: bool) -> None:
    """Print the dead letters of the configured queue."""
    queue = connect_queue(settings)
    await queue.connect()
    try:
        letters = await queue.dead_letters.entries()
    finally:
        await queue.disconnect()
    for letter in letters:
        if as_json:
            print(json.dumps(asdict(letter), sort_keys=True))
        else:
            print(
                f"{letter.failed_at}  {letter.message_id}  {letter.task}  "
                f"attempts={letter.attempts}  {letter.reason}"
            )
    if not letters:
        print("no dead letters", file=sys.stderr)


async def replay_dead_letters(settings: Settings, ids: list[str] | None) -> int:
    """Replay ``ids`` (every letter if ``None``); the exit status: 0 if all were
    re-enqueued, else 1."""
    queue = connect_queue(settings)
    await queue.connect()
    try:
        results = await replay(queue.dead_letters, queue, ids)
    finally:
        await queue.disconnect()
    for result in results:
        verdict = "replayed" if result.replayed else "not replayed"
        print(f"{verdict}  {result.message_id}  {result.detail}")
    if not results:
        print("no dead letters", file=sys.stderr)
    return 0 if all(result.replayed for result in results) else 1
