"""The notifier through a real Redis Sentinel: it sends what the producer queued on the
master, and keeps sending after a failover moves the master."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from saq import Status

from herald_notifier.settings import Settings
from herald_notifier.worker import build_settings
from herald_shared import queues
from herald_shared.tasks import enqueue
from herald_testing.jobs import finished, running_worker, wait_for_job
from herald_testing.maildev import MailDev, MailDevClient
from herald_testing.messages import welcome_email
from herald_testing.sentinel import MASTER_NAME, SentinelSet

SettingsFor = Callable[..., Settings]


async def test_emails_still_go_out_after_a_failover(
    settings_for: SettingsFor,
    maildev: MailDev,
    mailbox: MailDevClient,
    redis_sentinels: SentinelSet,
) -> None:
    on_local_redis = settings_for(smtp_host=maildev.smtp_host, smtp_port=maildev.smtp_port)
    settings = Settings(
        **on_local_redis.model_dump()
        | {
            # Only the database of the URL counts: the Sentinels give the master's address.
            "redis_url": "redis://unused.invalid:1/0",
            "redis_sentinels": redis_sentinels.sentinels,
            "redis_sentinel_master": MASTER_NAME,
        }
    )
    producer = queues.connect_queue(
        settings.redis_target, queues.NOTIFIER, namespace=settings.queue_namespace
    )
    await producer.connect()
    try:
        async with running_worker(build_settings(settings)):
            first = await enqueue(producer, welcome_email(email="before@example.com"))
            await mailbox.wait_for_email("before@example.com")
            # The worker keeps polling while Sentinel moves the master.
            await asyncio.to_thread(redis_sentinels.failover)
            second = await enqueue(producer, welcome_email(email="after@example.com"))
            await mailbox.wait_for_email("after@example.com")
            assert first is not None
            assert second is not None
            done = [await wait_for_job(producer, job.key, finished) for job in (first, second)]
    finally:
        await producer.disconnect()

    assert [job.status for job in done] == [Status.COMPLETE, Status.COMPLETE]
    assert len(await mailbox.emails()) == 2
