"""The jobs that call the API: the scheduler decides when, the API does the work.

- ``reconcile_outbox``: unsettled outbox rows checked against Redis;
- ``purge_outbox``: settled outbox rows past their retention;
- ``remind_unverified_users``: one reminder per user unverified for a while;
- ``purge_unverified_users``: accounts never verified;
- ``purge_tokens``: spent verification tokens;
- ``purge_idempotency_keys``: expired idempotency keys;
- ``purge_sessions``: login sessions that ended long ago.

The API itself cannot run here (no service imports another); an HTTP server
speaking the API's internal contract stands in for it, and the e2e suite runs
the jobs against the real API. Ages come from the configuration, so nothing
waits for a day to pass.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import httpx
import pytest
from aiohttp import web
from prometheus_client import REGISTRY
from pydantic import SecretStr
from structlog.testing import capture_logs

from herald_scheduler.context import SchedulerContext
from herald_scheduler.internal_api import InternalApi
from herald_scheduler.jobs import (
    purge_idempotency_keys,
    purge_outbox,
    purge_sessions,
    purge_tokens,
    purge_unverified_users,
    reconcile_outbox,
    remind_unverified_users,
)
from herald_scheduler.settings import Settings
from herald_scheduler.worker import build_settings
from herald_testing.jobs import running_worker
from herald_testing.ports import free_port
from herald_testing.waiting import eventually

TOKEN = "internal-token-for-tests"
EVERY_SECOND = "* * * * * *"
NEVER = "0 0 1 1 *"
"""Once a year: a job that must stay out of a test's way."""

MAX_AGE_SECONDS = 100 * 365 * 24 * 3600
"""The API's bound on every ``older_than_seconds`` (its floor is 60)."""


@dataclass(frozen=True)
class ApiJob:
    """One job that calls the API, and how it does."""

    function: Callable[[SchedulerContext], Awaitable[int]]
    path: str
    """The internal endpoint it calls."""
    age: str
    """The job context key of the ``older_than_seconds`` it sends."""
    event: str
    """The event of its log line."""
    count: str
    """The field holding the count, in the API's answer and in the log line."""

    @property
    def name(self) -> str:
        return self.function.__qualname__


OUTBOX = ApiJob(
    purge_outbox,
    "/internal/v1/outbox/purge",
    "outbox_retention_seconds",
    "outbox.purged",
    "deleted",
)
REMIND = ApiJob(
    remind_unverified_users,
    "/internal/v1/users/remind-unverified",
    "verification_reminder_after_seconds",
    "unverified_users.reminded",
    "reminded",
)
PURGE_USERS = ApiJob(
    purge_unverified_users,
    "/internal/v1/users/purge-unverified",
    "unverified_account_seconds",
    "unverified_users.purged",
    "deleted",
)
PURGE_TOKENS = ApiJob(
    purge_tokens, "/internal/v1/tokens/purge", "token_retention_seconds", "tokens.purged", "deleted"
)
PURGE_KEYS = ApiJob(
    purge_idempotency_keys,
    "/internal/v1/idempotency-keys/purge",
    "idempotency_key_retention_seconds",
    "idempotency_keys.purged",
    "deleted",
)
PURGE_SESSIONS = ApiJob(
    purge_sessions,
    "/internal/v1/sessions/purge",
    "session_retention_seconds",
    "sessions.purged",
    "deleted",
)
JOBS = [OUTBOX, REMIND, PURGE_USERS, PURGE_TOKENS, PURGE_KEYS, PURGE_SESSIONS]
"""The jobs whose endpoint answers one count."""
RECONCILE_PATH = "/internal/v1/outbox/reconcile"
RECONCILED = {
    "delivered": 7,
    "skipped": 1,
    "dead": 1,
    "waiting": 2,
    "repushed": 3,
    "oldest_unsettled_seconds": 312.5,
}
"""The stand-in's answer to a reconciliation."""
each_job = pytest.mark.parametrize("job", JOBS, ids=[job.name for job in JOBS])


@dataclass
class ApiStandIn:
    """The API's internal endpoints as the scheduler sees them.

    Each endpoint checks the bearer token, the JSON content type and the range of
    ``older_than_seconds`` as the API does, records the bodies it accepts in
    ``received`` (by path), and answers ``counts[path]`` (default 3), or the
    status ``failures[path]`` instead when there is one.
    """

    url: str = ""
    received: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)

    def client(self, token: str = TOKEN) -> InternalApi:
        return InternalApi(base_url=self.url, token=SecretStr(token), timeout=5)

    async def handle(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"detail": "Not authenticated"}, status=401)
        if request.content_type != "application/json":
            return web.json_response({"detail": "Expected a JSON body"}, status=415)
        body = await request.json()
        age = body.get("older_than_seconds") if isinstance(body, dict) else None
        if type(age) is not int or not 60 <= age <= MAX_AGE_SECONDS:
            return web.json_response({"detail": "older_than_seconds out of range"}, status=422)
        if (status := self.failures.get(request.path)) is not None:
            return web.json_response({"detail": "stand-in failure"}, status=status)
        self.received.setdefault(request.path, []).append(body)
        if request.path == RECONCILE_PATH:
            return web.json_response(RECONCILED)
        [job] = [job for job in JOBS if job.path == request.path]
        return web.json_response({job.count: self.counts.get(request.path, 3)})


@pytest.fixture
async def api() -> AsyncIterator[ApiStandIn]:
    stand_in = ApiStandIn()
    app = web.Application()
    for path in [job.path for job in JOBS] + [RECONCILE_PATH]:
        app.router.add_post(path, stand_in.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stand_in.url = f"http://127.0.0.1:{port}"
    yield stand_in
    await runner.cleanup()


@contextlib.asynccontextmanager
async def calling(api: ApiStandIn, job: ApiJob, age: int, **client: str) -> AsyncIterator[Any]:
    """The job context of one run of ``job`` on ``api`` sending ``age``."""
    internal_api = api.client(**client)
    try:
        yield cast(SchedulerContext, {"internal_api": internal_api, job.age: age})
    finally:
        await internal_api.aclose()


def api_work(job: ApiJob) -> float:
    return REGISTRY.get_sample_value("herald_scheduler_api_work_total", {"job": job.name}) or 0.0


def runs(job: ApiJob, outcome: str) -> float:
    labels = {"job": job.name, "outcome": outcome}
    return REGISTRY.get_sample_value("herald_scheduler_cron_runs_total", labels) or 0.0


@each_job
async def test_a_job_asks_its_endpoint_with_its_age_and_logs_the_count(
    api: ApiStandIn, job: ApiJob
) -> None:
    api.counts[job.path] = 5
    before = api_work(job)

    async with calling(api, job, 3600) as ctx:
        with capture_logs() as logs:
            count = await job.function(ctx)

    assert count == 5
    assert api.received == {job.path: [{"older_than_seconds": 3600}]}
    # The count and the age, nothing about any user.
    assert logs == [
        {"event": job.event, "log_level": "info", job.count: 5, "older_than_seconds": 3600}
    ]
    assert api_work(job) == before + 5


async def test_the_reconciliation_sends_its_age_and_logs_what_the_api_did(
    api: ApiStandIn,
) -> None:
    labels = {"job": "reconcile_outbox"}
    before = REGISTRY.get_sample_value("herald_scheduler_api_work_total", labels) or 0.0
    internal_api = api.client()
    ctx = cast(
        SchedulerContext, {"internal_api": internal_api, "outbox_reconcile_after_seconds": 300}
    )
    try:
        with capture_logs() as logs:
            result = await reconcile_outbox(ctx)
    finally:
        await internal_api.aclose()

    assert result == RECONCILED
    assert api.received == {RECONCILE_PATH: [{"older_than_seconds": 300}]}
    assert logs == [
        {"event": "outbox.reconciled", "log_level": "info", "older_than_seconds": 300} | RECONCILED
    ]
    # Every row it checked: settled (7 + 1 + 1), waited for (2) or pushed again (3).
    assert REGISTRY.get_sample_value("herald_scheduler_api_work_total", labels) == before + 14


async def test_a_failed_reconciliation_fails_the_run(api: ApiStandIn) -> None:
    api.failures[RECONCILE_PATH] = 503
    internal_api = api.client()
    ctx = cast(
        SchedulerContext, {"internal_api": internal_api, "outbox_reconcile_after_seconds": 300}
    )
    try:
        with capture_logs() as logs, pytest.raises(httpx.HTTPStatusError, match="503"):
            await reconcile_outbox(ctx)
    finally:
        await internal_api.aclose()

    assert logs == []


@each_job
async def test_an_api_error_fails_the_run(api: ApiStandIn, job: ApiJob) -> None:
    api.failures[job.path] = 500

    async with calling(api, job, 3600) as ctx:
        with capture_logs() as logs, pytest.raises(httpx.HTTPStatusError, match="500"):
            await job.function(ctx)

    assert logs == []


@each_job
async def test_a_wrong_token_fails_the_run(api: ApiStandIn, job: ApiJob) -> None:
    async with calling(api, job, 3600, token="wrong") as ctx:
        with pytest.raises(httpx.HTTPStatusError, match="401"):
            await job.function(ctx)

    assert api.received == {}


async def test_an_unreachable_api_fails_the_run() -> None:
    internal_api = InternalApi(
        base_url=f"http://127.0.0.1:{free_port()}", token=SecretStr(TOKEN), timeout=5
    )
    ctx = cast(
        SchedulerContext,
        {"internal_api": internal_api, "verification_reminder_after_seconds": 3600},
    )
    try:
        with pytest.raises(httpx.ConnectError):
            await remind_unverified_users(ctx)
    finally:
        await internal_api.aclose()


def test_the_api_jobs_are_scheduled_as_configured_and_only_with_a_token() -> None:
    crons: dict[str, Any] = {
        "outbox_reconcile_cron": "*/2 * * * *",
        "outbox_purge_cron": "*/5 * * * *",
        "verification_reminder_cron": "* * * * * */3",
        "unverified_purge_cron": "7 * * * *",
        "token_purge_cron": "9 3 * * *",
        "idempotency_key_purge_cron": "11 * * * *",
        "session_purge_cron": "13 4 * * *",
    }
    without = build_settings(Settings(_env_file=None, internal_token=None, **crons))
    with_token = build_settings(Settings(_env_file=None, internal_token=SecretStr(TOKEN), **crons))

    assert [job.function.__qualname__ for job in without["cron_jobs"]] == ["report_notifier_queue"]
    scheduled = {
        job.function: (job.cron, job.unique, job.retries) for job in with_token["cron_jobs"]
    }
    functions = [reconcile_outbox, *(job.function for job in JOBS)]
    assert {function: scheduled.get(function) for function in functions} == {
        reconcile_outbox: ("*/2 * * * *", True, 1),
        purge_outbox: ("*/5 * * * *", True, 1),
        remind_unverified_users: ("* * * * * */3", True, 1),
        purge_unverified_users: ("7 * * * *", True, 1),
        purge_tokens: ("9 3 * * *", True, 1),
        purge_idempotency_keys: ("11 * * * *", True, 1),
        purge_sessions: ("13 4 * * *", True, 1),
    }
    # One slot per CronJob: a slow API call holds up no other job.
    assert with_token["concurrency"] == len(with_token["cron_jobs"]) == 8


def worker_settings(
    api: ApiStandIn, redis_url: str, queue_namespace: str, **overrides: Any
) -> Settings:
    """Every job off unless ``overrides`` schedules it; metrics not served."""
    values: dict[str, Any] = {
        "queue_report_cron": NEVER,
        "outbox_reconcile_cron": NEVER,
        "outbox_purge_cron": NEVER,
        "verification_reminder_cron": NEVER,
        "unverified_purge_cron": NEVER,
        "token_purge_cron": NEVER,
        "idempotency_key_purge_cron": NEVER,
        "session_purge_cron": NEVER,
        **overrides,
    }
    return Settings(
        _env_file=None,
        redis_url=redis_url,
        queue_namespace=queue_namespace,
        api_url=api.url,
        internal_token=SecretStr(TOKEN),
        scheduler_shutdown_grace_seconds=0,
        metrics_port=0,
        **values,
    )


async def test_a_worker_sends_each_job_its_configured_age(
    api: ApiStandIn, redis_url: str, queue_namespace: str
) -> None:
    settings = worker_settings(
        api,
        redis_url,
        queue_namespace,
        outbox_reconcile_cron=EVERY_SECOND,
        outbox_purge_cron=EVERY_SECOND,
        verification_reminder_cron=EVERY_SECOND,
        unverified_purge_cron=EVERY_SECOND,
        token_purge_cron=EVERY_SECOND,
        idempotency_key_purge_cron=EVERY_SECOND,
        session_purge_cron=EVERY_SECOND,
        outbox_reconcile_after_seconds=240,
        outbox_retention_seconds=600,
        verification_reminder_after_seconds=120,
        unverified_account_days=2,
        token_retention_seconds=300,
        idempotency_key_retention_seconds=90,
        session_retention_seconds=150,
    )

    async with running_worker(build_settings(settings)):
        await eventually(
            lambda: len(api.received) == len(JOBS) + 1, "every endpoint called", within=15.0
        )

    ages = {
        path: {body["older_than_seconds"] for body in bodies}
        for path, bodies in api.received.items()
    }
    assert ages == {
        RECONCILE_PATH: {240},
        OUTBOX.path: {600},
        REMIND.path: {120},
        PURGE_USERS.path: {2 * 24 * 3600},
        PURGE_TOKENS.path: {300},
        PURGE_KEYS.path: {90},
        PURGE_SESSIONS.path: {150},
    }


async def test_an_api_error_fails_the_cron_run_and_is_logged(
    api: ApiStandIn, redis_url: str, queue_namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    api.failures[REMIND.path] = 503
    failed = runs(REMIND, "failed")
    settings = worker_settings(
        api, redis_url, queue_namespace, verification_reminder_cron=EVERY_SECOND
    )

    with caplog.at_level(logging.ERROR, logger="saq"):
        async with running_worker(build_settings(settings)):
            await eventually(
                lambda: runs(REMIND, "failed") > failed, "a failed run counted", within=15.0
            )

    errors = [
        record.exc_info[1]
        for record in caplog.records
        if record.name == "saq" and record.levelno == logging.ERROR and record.exc_info
    ]
    assert errors, "SAQ logged no error for the failed run"
    assert all(isinstance(error, httpx.HTTPStatusError) for error in errors)
    assert "503" in str(errors[0])


async def test_without_a_token_startup_says_which_jobs_are_off(
    redis_url: str, queue_namespace: str
) -> None:
    settings = build_settings(
        Settings(
            _env_file=None,
            redis_url=redis_url,
            queue_namespace=queue_namespace,
            internal_token=None,
            metrics_port=0,
        )
    )
    startup, shutdown = settings["startup"], settings["shutdown"]
    assert callable(startup)
    assert callable(shutdown)
    ctx = cast(SchedulerContext, {})

    with capture_logs() as logs:
        await startup(ctx)
    try:
        assert "internal_api" not in ctx
    finally:
        await shutdown(ctx)

    [warning] = [line for line in logs if line["event"] == "scheduler.api_jobs_disabled"]
    assert warning["log_level"] == "warning"
    assert warning["jobs"] == ["reconcile_outbox", *(job.name for job in JOBS)]
