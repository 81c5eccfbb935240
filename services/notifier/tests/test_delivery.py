"""Delivery records on a real Redis: claim, lease, release, sent."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from herald_notifier.delivery import Claim, DeliveryRecords, Outcome

DAY_MS = 24 * 3600 * 1000


@pytest.fixture
def records(deliveries: DeliveryRecords) -> DeliveryRecords:
    return deliveries


async def claim_once_free(
    records: DeliveryRecords, message_id: uuid.UUID, owner: str, *, within: float = 5.0
) -> Claim:
    """Claim ``message_id`` as soon as no live claim holds it (a held claim writes nothing)."""
    async with asyncio.timeout(within):
        while True:
            claim = await records.claim(message_id, owner=owner, lease_seconds=10)
            if claim.outcome != Outcome.HELD:
                return claim
            await asyncio.sleep(0.02)


async def test_the_first_claim_wins_and_others_are_held_off(records: DeliveryRecords) -> None:
    message_id = uuid.uuid4()

    first = await records.claim(message_id, owner="w1/job/1", lease_seconds=10)
    second = await records.claim(message_id, owner="w2/job/1", lease_seconds=10)

    assert first.outcome == Outcome.CLAIMED
    assert first.previous is None
    assert second.outcome == Outcome.HELD
    assert second.previous is not None
    assert second.previous.startswith("claimed:w1/job/1:")


async def test_a_sent_message_is_never_claimed_again(records: DeliveryRecords) -> None:
    message_id = uuid.uuid4()
    claim = await records.claim(message_id, owner="w1/job/1", lease_seconds=10)

    await records.mark_sent(claim)
    again = await records.claim(message_id, owner="w2/job/2", lease_seconds=10)

    assert again.outcome == Outcome.SENT
    record = await records.record(message_id)
    assert record is not None
    assert record == "sent:"
    ttl = await records.redis.pttl(records.key(message_id))
    assert 29 * DAY_MS < ttl <= 30 * DAY_MS


async def test_an_expired_claim_is_taken_over_and_reported_stale(
    records: DeliveryRecords,
) -> None:
    message_id = uuid.uuid4()
    await records.claim(message_id, owner="dead/job/1", lease_seconds=0.2)

    takeover = await claim_once_free(records, message_id, "w2/job/2")

    assert takeover.outcome == Outcome.STALE
    assert takeover.outcome.possible_duplicate
    assert takeover.previous is not None
    assert takeover.previous.startswith("claimed:dead/job/1:")


async def test_a_renewed_claim_stays_held(records: DeliveryRecords) -> None:
    message_id = uuid.uuid4()
    claim = await records.claim(message_id, owner="w1/job/1", lease_seconds=0.3)

    for _ in range(5):
        await asyncio.sleep(0.1)
        assert await records.renew(claim)

    other = await records.claim(message_id, owner="w2/job/1", lease_seconds=10)
    assert other.outcome == Outcome.HELD


async def test_renewing_a_claim_someone_took_over_says_so(records: DeliveryRecords) -> None:
    message_id = uuid.uuid4()
    mine = await records.claim(message_id, owner="w1/job/1", lease_seconds=0.05)
    await asyncio.sleep(0.1)
    await records.claim(message_id, owner="w2/job/2", lease_seconds=10)

    assert not await records.renew(mine)
    assert not await records.release(mine)
    record = await records.record(message_id)
    assert record is not None
    assert record.startswith("claimed:w2/job/2:")


async def test_a_released_claim_frees_the_message_at_once(records: DeliveryRecords) -> None:
    message_id = uuid.uuid4()
    claim = await records.claim(message_id, owner="w1/job/1", lease_seconds=60)

    assert await records.release(claim)
    assert await records.record(message_id) is None
    again = await records.claim(message_id, owner="w1/job/2", lease_seconds=60)
    assert again.outcome == Outcome.CLAIMED


async def test_an_unconfirmed_send_frees_the_message_but_is_remembered(
    records: DeliveryRecords,
) -> None:
    message_id = uuid.uuid4()
    claim = await records.claim(message_id, owner="w1/job/1", lease_seconds=60)

    assert await records.leave_unconfirmed(claim)
    again = await records.claim(message_id, owner="w1/job/2", lease_seconds=60)

    assert again.outcome == Outcome.UNCONFIRMED
    assert again.outcome.possible_duplicate
    assert again.previous is not None
    assert again.previous == "unconfirmed:"


async def test_a_skipped_message_is_never_claimed_and_a_sent_one_never_skipped(
    records: DeliveryRecords,
) -> None:
    skipped, sent = uuid.uuid4(), uuid.uuid4()
    await records.mark_sent(await records.claim(sent, owner="w1/job/1", lease_seconds=10))

    assert await records.mark_skipped(skipped)
    assert not await records.mark_skipped(sent)

    again = await records.claim(skipped, owner="w2/job/2", lease_seconds=10)
    assert (again.outcome, again.outcome.ours, again.previous) == (
        Outcome.SKIPPED,
        False,
        "skipped:",
    )
    assert await records.record(skipped) == "skipped:"
    assert await records.record(sent) == "sent:"
    assert 29 * DAY_MS < await records.redis.pttl(records.key(skipped)) <= 30 * DAY_MS


async def test_a_skip_takes_a_live_claim_from_its_attempt(records: DeliveryRecords) -> None:
    """An account deleted while an attempt holds its message: the attempt loses its lease."""
    message_id = uuid.uuid4()
    claim = await records.claim(message_id, owner="w1/job/1", lease_seconds=60)

    assert await records.mark_skipped(message_id)

    assert not await records.renew(claim)
    assert not await records.release(claim)
    assert await records.record(message_id) == "skipped:"


async def test_records_live_in_the_queue_namespace(
    records: DeliveryRecords, queue_namespace: str
) -> None:
    message_id = uuid.uuid4()

    assert records.key(message_id) == f"herald:{queue_namespace}:notifier:delivery:{message_id}"
