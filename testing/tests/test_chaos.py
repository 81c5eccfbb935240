"""``make chaos``'s own logic: reproducible plans, a retrying client, honest counts.

The run itself needs the container stack (``make chaos``); these check what it
decides from what it sees: the same seed gives the same faults, a retried
signup is neither lost nor a duplicate, and a run fails exactly when an email
is lost, a signup is given up, or a duplicate is not counted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest

from herald_testing.chaos_client import sign_up_until_accepted
from herald_testing.chaos_plan import draw
from herald_testing.chaos_tally import (
    ACCOUNT_EXISTS_SUBJECT,
    POSSIBLE_DUPLICATE_EVENTS,
    WELCOME_SUBJECT,
    Figures,
    events_by_message,
    read_mail,
    total,
)
from herald_testing.ports import free_port
from herald_testing.prometheus import CounterAcrossRestarts, sample_sum


def test_a_seed_gives_the_same_fault_plan_every_time_and_another_seed_another() -> None:
    assert draw(123) == draw(123)
    assert draw(123) != draw(124)
    plan = draw(7)
    shares = [plan.redis_stop_at, plan.api_kill_at, plan.postgres_restart_at]
    assert all(0 < share < 1 for share in [*shares, plan.sweeper_kill_at])
    assert plan.first_replica in (1, 2)


def email(to: str, subject: str, message_id: str, at: str = "2026-12-03T05:44:07.000Z") -> Any:
    return {
        "to": [{"address": to}],
        "subject": subject,
        "messageId": f"{message_id}@herald.localhost",
        "time": at,
    }


def test_a_retried_signups_account_exists_notice_is_not_a_second_welcome() -> None:
    emails = [
        email("ada@example.com", WELCOME_SUBJECT, "m1"),
        email("ada@example.com", ACCOUNT_EXISTS_SUBJECT, "m2", at="2026-12-03T05:44:09.000Z"),
        email("bob@example.com", WELCOME_SUBJECT, "m3"),
        email("bob@example.com", WELCOME_SUBJECT, "m3"),
        email("someone-else@example.com", WELCOME_SUBJECT, "m4"),
    ]

    mail = read_mail(emails, ["Ada@example.com", "bob@example.com", "cy@example.com"])

    assert mail.welcomes == {"ada@example.com": 1, "bob@example.com": 2}
    assert mail.account_exists == 1
    assert mail.resent == 1
    assert mail.last_at is not None
    assert mail.last_at.second == 9
    assert mail.unaccounted({"m3": 1}) == {}
    assert mail.unaccounted({"m1": 1}) == {"m3": 1}


def test_possible_duplicates_are_counted_per_message_from_the_notifiers_log() -> None:
    lines = [
        {"event": "email.sent", "message_id": "m1"},
        {"event": next(iter(POSSIBLE_DUPLICATE_EVENTS)), "message_id": "m1"},
        {"event": "Sweeping job Job<...>"},
    ]
    assert events_by_message(lines, POSSIBLE_DUPLICATE_EVENTS) == {"m1": 1}


CLEAN = Figures(
    signups=10,
    accepted=10,
    failed_signups=0,
    retried_signups=2,
    server_errors=0,
    users_created=10,
    welcome_emails=11,
    account_exists_notices=1,
    lost=0,
    duplicated=1,
    resent_any_email=1,
    unaccounted_duplicates=0,
    possible_duplicates_counted=1,
    possible_duplicates_metric=1,
    reconciled=0,
    reconciled_metric=0,
    dead_lettered=0,
    killed_mid_sweep=1,
    drain_seconds=4.0,
)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"lost": 1}, "1 lost"),
        ({"server_errors": 2}, "2 answers 500 (an outage must be 503)"),
        ({"failed_signups": 1}, "1 failed signups"),
        ({"duplicated": 2}, "2 duplicates seen but 1 counted"),
        ({"resent_any_email": 3}, "3 duplicates seen but 1 counted"),
        ({"unaccounted_duplicates": 1}, "1 duplicates not counted for their message"),
    ],
)
def test_a_run_fails_on_a_loss_a_failed_signup_or_an_uncounted_duplicate(
    change: dict[str, int], problem: str
) -> None:
    assert CLEAN.problems() == []
    assert dataclasses.replace(CLEAN, **change).problems() == [problem]


def test_the_report_starts_with_the_four_labelled_lines_and_totals_add_up() -> None:
    both = total([CLEAN, dataclasses.replace(CLEAN, lost=1, drain_seconds=None)])

    assert CLEAN.lines()[:4] == [
        "lost 0",
        "duplicated 1",
        "possible duplicates counted 1",
        "reconciled 0",
    ]
    assert both.lines()[:4] == [
        "lost 1",
        "duplicated 2",
        "possible duplicates counted 2",
        "reconciled 0",
    ]
    assert both.drain_seconds is None


def test_a_counter_is_summed_over_the_lives_of_a_restarted_container() -> None:
    registry = CollectorRegistry()
    counter = Counter("herald_api_outbox_reconciled", "", ["outcome"], registry=registry)
    counter.labels("repushed").inc(3)
    counter.labels("found").inc(5)
    exposition = generate_latest(registry).decode()
    repushed = sample_sum(exposition, "herald_api_outbox_reconciled_total", {"outcome": "repushed"})
    summed = CounterAcrossRestarts()

    summed.read("api", repushed)
    summed.killed("api")
    summed.read("api", 2.0)

    assert repushed == 3
    assert sample_sum(exposition, "herald_notifier_possible_duplicates_total") == 0
    assert summed.total == 5


@contextlib.contextmanager
def api_answering(*statuses: int) -> Iterator[tuple[str, list[bytes]]]:
    """A real HTTP server answering each POST with the next of ``statuses`` (the
    last one from then on, 503s with ``Retry-After: 0``); its URL and the bodies."""
    bodies: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(statuses[min(len(bodies), len(statuses)) - 1])
            self.send_header("Retry-After", "0")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            del format, args

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", bodies
    finally:
        server.shutdown()
        server.server_close()


async def test_a_signup_is_retried_with_the_same_address_until_accepted() -> None:
    with api_answering(503, 503, 202) as (url, bodies):
        async with httpx.AsyncClient(base_url=url) as client:
            result = await sign_up_until_accepted(
                client, address="ada@example.com", display_name="Ada", within=30
            )

    assert (result.accepted, result.attempts) == (True, 3)
    assert result.retried_on == ("HTTP 503", "HTTP 503")
    assert len(bodies) == 3
    assert len(set(bodies)) == 1


async def test_a_signup_the_api_rejects_is_failed_at_once() -> None:
    with api_answering(422) as (url, _):
        async with httpx.AsyncClient(base_url=url) as client:
            result = await sign_up_until_accepted(
                client, address="ada@example.com", display_name="Ada", within=30
            )

    assert (result.accepted, result.attempts, result.failure) == (False, 1, "HTTP 422")


async def test_a_signup_that_no_api_ever_answers_is_given_up_as_failed() -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{free_port()}") as client:
        result = await sign_up_until_accepted(
            client, address="ada@example.com", display_name="Ada", within=1.0
        )

    assert not result.accepted
    assert result.attempts > 1
    assert "ConnectError" in str(result.failure)
