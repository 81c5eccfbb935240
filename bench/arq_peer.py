# /// script
# requires-python = ">=3.11"
# dependencies = [
#     "arq==0.28.0",
#     "aiosmtplib==5.1.3",
#     "email-validator==2.4.0",
#     "jinja2==3.1.6",
#     "pydantic==2.14.4",
# ]
# ///
"""The arq peer of Herald's notifier: the same welcome-email job on arq.

    PYTHONPATH=.:shared/src uv run --locked --script bench/arq_peer.py worker QUEUE CONCURRENCY
    PYTHONPATH=.:shared/src uv run --locked --script bench/arq_peer.py enqueue QUEUE COUNT TAG
    PYTHONPATH=.:shared/src uv run --locked --script bench/arq_peer.py check

It runs in its own environment, this script's dependencies locked in
``arq_peer.py.lock``: arq pins ``redis<6`` and Herald's workspace is on
redis 7, so arq cannot be installed next to Herald. ``herald_shared`` (the
``WelcomeEmail`` contract) and ``bench.peer_email`` come from the source
tree (``PYTHONPATH``).

The job is what a straightforward arq worker does: decode the message, build
the email (``bench.peer_email``: Herald's templates, an ``EmailMessage``) and
hand it to the relay with ``aiosmtplib.send`` (one SMTP session per email).
Unlike Herald it keeps no delivery record (no at-most-once claim and mark),
no lease heartbeat, no dead letters and no metrics. arq's default logging (a
line per job start and end) is on, as under arq's own CLI.
``HERALD_REDIS_URL``, ``HERALD_SMTP_HOST``, ``HERALD_SMTP_PORT`` and
``HERALD_LINK_SECRET`` come from the environment.
"""

from __future__ import annotations

import asyncio
import logging.config
import os
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiosmtplib
from arq import create_pool  # type: ignore[import-not-found, unused-ignore]
from arq.connections import RedisSettings  # type: ignore[import-not-found, unused-ignore]
from arq.logs import default_log_config  # type: ignore[import-not-found, unused-ignore]
from arq.worker import Worker, func  # type: ignore[import-not-found, unused-ignore]
from pydantic import SecretStr

from bench.peer_email import WelcomeBuilder
from herald_shared.messages import EmailLink, WelcomeEmail
from herald_shared.tokens import new_token_id

TASK = "send_welcome_email"


def redis_settings() -> Any:
    return RedisSettings.from_dsn(os.environ["HERALD_REDIS_URL"])


async def send_welcome_email(ctx: dict[str, Any], payload: dict[str, Any]) -> str:
    message = WelcomeEmail.decode(payload)
    email = ctx["builder"].build(message)
    await aiosmtplib.send(
        email, hostname=ctx["smtp_host"], port=ctx["smtp_port"], timeout=15, start_tls=False
    )
    return "sent"


async def startup(ctx: dict[str, Any]) -> None:
    ctx["builder"] = WelcomeBuilder(link_secret=SecretStr(os.environ["HERALD_LINK_SECRET"]))
    ctx["smtp_host"] = os.environ["HERALD_SMTP_HOST"]
    ctx["smtp_port"] = int(os.environ["HERALD_SMTP_PORT"])
    print("ready", flush=True)


def work(queue_name: str, concurrency: int) -> None:
    logging.config.dictConfig(default_log_config(verbose=False))
    worker = Worker(
        functions=[func(send_welcome_email, name=TASK)],
        queue_name=queue_name,
        max_jobs=concurrency,
        redis_settings=redis_settings(),
        on_startup=startup,
    )
    worker.run()


def welcome(email: str) -> dict[str, Any]:
    link = EmailLink(token_id=new_token_id(), expires_at=datetime.now(UTC) + timedelta(hours=48))
    message = WelcomeEmail(
        user_id=uuid.uuid4(), email=email, display_name="Bench User", verification=link
    )
    return message.encode()


async def enqueue(queue_name: str, count: int, tag: str) -> None:
    redis = await create_pool(redis_settings(), default_queue_name=queue_name)
    try:
        for start in range(0, count, 250):
            await asyncio.gather(
                *(
                    redis.enqueue_job(
                        TASK, welcome(f"{tag}-{i}@example.com"), _job_id=f"{queue_name}_{i}"
                    )
                    for i in range(start, min(count, start + 250))
                )
            )
    finally:
        await redis.aclose()


def main(argv: list[str]) -> None:
    command, *rest = argv
    if command == "check":
        return  # the imports worked: the environment is ready
    queue_name, *rest = rest
    if command == "worker":
        work(queue_name, int(rest[0]))
    elif command == "enqueue":
        asyncio.run(enqueue(queue_name, int(rest[0]), rest[1]))
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
