"""argon2id hashing: verifying, the dummy verification, and when a stored hash is too weak."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator

import pytest
from argon2 import PasswordHasher as Argon2Hasher
from argon2 import Type

from herald_api.auth.passwords import HASH_THREAD_NICENESS, PasswordHasher

PASSWORD = "correct horse battery staple"


@pytest.fixture
def hasher() -> Iterator[PasswordHasher]:
    hasher = PasswordHasher(memory_kib=19_456, time_cost=2, parallelism=1, workers=1, queue_depth=4)
    yield hasher
    hasher.close()


def argon2(*, memory_kib: int = 19_456, time_cost: int = 2, parallelism: int = 1) -> Argon2Hasher:
    return Argon2Hasher(
        memory_cost=memory_kib, time_cost=time_cost, parallelism=parallelism, type=Type.ID
    )


async def test_verify_tells_the_password_from_others(hasher: PasswordHasher) -> None:
    stored = await hasher.hash(PASSWORD)

    assert await hasher.verify(stored, PASSWORD)
    assert not await hasher.verify(stored, PASSWORD.upper())
    assert not await hasher.verify(stored, "")


async def test_verify_takes_hashes_of_other_parameters(hasher: PasswordHasher) -> None:
    stored = argon2(memory_kib=8_192, time_cost=1).hash(PASSWORD)

    assert await hasher.verify(stored, PASSWORD)


async def test_a_lone_surrogate_or_a_broken_hash_is_a_mismatch_not_an_error(
    hasher: PasswordHasher,
) -> None:
    stored = await hasher.hash(PASSWORD)

    assert not await hasher.verify(stored, "pass\ud800word")
    assert not await hasher.verify("not a hash", PASSWORD)
    await hasher.verify_dummy("pass\ud800word")


async def test_the_dummy_hash_is_current_and_matches_no_password(hasher: PasswordHasher) -> None:
    dummy = hasher._dummy_hash

    assert not hasher.needs_rehash(dummy)
    assert not await hasher.verify(dummy, PASSWORD)
    assert not await hasher.verify(dummy, "")


@pytest.mark.parametrize(
    ("memory_kib", "time_cost", "parallelism", "weaker"),
    [
        (19_456, 2, 1, False),  # the current parameters
        (8_192, 2, 1, True),
        (19_456, 1, 1, True),
        (65_536, 3, 1, False),  # stronger: another process may already use these
        (19_456, 2, 4, False),  # lanes are no strength
    ],
)
def test_needs_rehash_only_for_weaker_hashes(
    hasher: PasswordHasher, memory_kib: int, time_cost: int, parallelism: int, weaker: bool
) -> None:
    stored = argon2(memory_kib=memory_kib, time_cost=time_cost, parallelism=parallelism).hash(
        PASSWORD
    )

    assert hasher.needs_rehash(stored) is weaker


def test_needs_rehash_for_other_argon2_variants_and_garbage(hasher: PasswordHasher) -> None:
    argon2i = Argon2Hasher(memory_cost=19_456, time_cost=2, parallelism=1, type=Type.I)

    assert hasher.needs_rehash(argon2i.hash(PASSWORD))
    assert hasher.needs_rehash("not a hash")


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread priorities are Linux's")
async def test_hashes_run_below_the_event_loops_priority(hasher: PasswordHasher) -> None:
    """Under load every core hashes; the loop (health checks, 503s) must still get the CPU."""
    await hasher.hash("correct horse battery staple")

    hash_threads = [t for t in threading.enumerate() if t.name.startswith("argon2")]
    assert hash_threads
    loop_priority = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    for thread in hash_threads:
        assert thread.native_id is not None
        niceness = os.getpriority(os.PRIO_PROCESS, thread.native_id)
        assert niceness == loop_priority + HASH_THREAD_NICENESS
