"""Enqueueing through the contract, on a real Redis."""

from __future__ import annotations

import uuid

import pytest
from saq import Queue

from herald_shared import queues
from herald_shared.messages import MessageError, WelcomeEmail
from herald_shared.tasks import SEND_WELCOME_EMAIL, enqueue
from herald_testing.messages import welcome_email


def welcome() -> WelcomeEmail:
    return welcome_email(user_id=uuid.uuid4(), email="ada@example.com", display_name="Ada")


async def test_enqueue_puts_one_job_with_the_task_policy(notifier_queue: Queue) -> None:
    message = welcome()

    job = await enqueue(notifier_queue, message)

    assert job is not None
    stored = await notifier_queue.job(str(message.message_id))
    assert stored is not None
    assert stored.function == "send_welcome_email"
    assert stored.kwargs == {"payload": message.encode()}
    assert (stored.retries, stored.timeout, stored.heartbeat) == (
        SEND_WELCOME_EMAIL.retries,
        SEND_WELCOME_EMAIL.timeout,
        SEND_WELCOME_EMAIL.heartbeat,
    )
    assert stored.retries > 1
    assert stored.retry_backoff
    assert WelcomeEmail.decode(stored.kwargs["payload"]) == message


async def test_the_same_message_in_flight_is_not_queued_twice(notifier_queue: Queue) -> None:
    message = welcome()

    assert await enqueue(notifier_queue, message) is not None
    assert await enqueue(notifier_queue, message) is None
    assert await notifier_queue.count("queued") == 1


async def test_an_invalid_message_never_reaches_redis(notifier_queue: Queue) -> None:
    # model_construct skips validation, as a careless producer might.
    bad = WelcomeEmail.model_construct(
        schema_version=2,
        message_id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        email="not-an-address",
        display_name="Ada",
        requested_at=welcome().requested_at,
        request_id=None,
        verification=welcome().verification,
    )

    with pytest.raises(MessageError, match="email"):
        await enqueue(notifier_queue, bad)
    assert await notifier_queue.count("incomplete") == 0


async def test_a_message_on_the_wrong_queue_is_refused(
    redis_url: str, queue_namespace: str
) -> None:
    scheduler = queues.connect_queue(redis_url, queues.SCHEDULER, namespace=queue_namespace)

    with pytest.raises(ValueError, match="belongs on queue 'notifier'"):
        await enqueue(scheduler, welcome())


def test_the_welcome_policy_has_a_heartbeat_well_inside_its_timeout() -> None:
    job = SEND_WELCOME_EMAIL.job(welcome())

    assert job.heartbeat == SEND_WELCOME_EMAIL.heartbeat > 0
    assert job.heartbeat * 3 <= job.timeout
    assert job.retries == SEND_WELCOME_EMAIL.retries


def test_namespaces_prefix_queue_names() -> None:
    assert queues.queue_name("notifier") == "notifier"
    assert queues.queue_name("notifier", namespace="staging") == "staging:notifier"
