"""Flat cost at size (issue 13, point 4): each request and job on an empty database, then
on one holding what 24 h of 100 signups/s leave, and the ratio of the two.

    uv run --group bench python -m bench.size [--users N] [--quick] [--keep] [--index-cost]

Two databases, each migrated by ``herald-api migrate``: ``herald_size_<id>_empty``
(only the few accounts the measures use) and ``herald_size_<id>`` (``--users``
accounts, 1,000,000 by default, with 8.64 outbox rows per account: 8.64 M rows
for 1 M, the 24 h a purge keeps at 100 signups/s, and a link token for each row
whose email carries a link). The rows are written by ``INSERT ... SELECT`` over
``generate_series`` in PostgreSQL, never through the API, with the secondary
indexes and constraints dropped meanwhile and rebuilt from their own definitions
(then ``VACUUM ANALYZE``, as autovacuum would have left them). They look like
real ones: every account has a real argon2id hash (one hash of ``PASSWORD``,
copied) so any account can log in; outbox payloads are valid messages of the
contract (a mix of the email kinds, welcome first); times spread over 24 h; the
states are what the relay and the reconciliation leave (relayed at once,
settled 5-6 minutes later, the last 5 minutes relayed but not settled yet).

On each database a real ``herald-api serve`` answers (both run at once, and
every measure alternates between them, so whatever else loads the machine loads
both), one request at a time: signup, login, verification resend (timed to its
new link token committed: the work runs after the response), account deletion;
and each job the scheduler calls (the outbox purge, the token purge, the
unverified-account purge, the reconciliation), each pass given ``SizePlan.batch``
rows of its own to do. Then, the servers stopped, relay passes
(``Relay.relay_once``, in this process) over 200 due rows each. Ages are the
scheduler's defaults, shifted by the time since the rows were written, so the
loaded rows are never due and the planner sees a steady state. docs/benchmarks.md,
"Flat cost at size", has the figures.

``--keep`` keeps the loaded database as a template (``herald_size_t<users>_<rev>``)
and reuses it next time (a file copy instead of the load). Everything else,
databases and Redis keys, is dropped at the end. ``--index-cost``: only signups,
on two empty databases, one without migration 0008's indexes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import math
import os
import secrets
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
import redis.asyncio as aioredis
import structlog
from argon2 import PasswordHasher, Type
from sqlalchemy.engine import make_url

from bench.common import (
    BIN,
    PASSWORD,
    Processes,
    delete_keys,
    migrate,
    percentile,
    recipient,
    signup_body,
    wait_ready,
)
from herald_api.core.db import create_engine, session_factory
from herald_api.core.settings import Settings as ApiSettings
from herald_api.outbox.models import OutboxMessage
from herald_api.outbox.relay import Relay
from herald_api.outbox.table import message_of
from herald_shared import queues
from herald_shared.internal_api import (
    PREFIX,
    PURGE_OUTBOX,
    PURGE_TOKENS,
    PURGE_UNVERIFIED_USERS,
    RECONCILE_OUTBOX,
)
from herald_shared.ledger import delivery_record_key
from herald_testing.backends import admin
from herald_testing.ports import free_port

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/herald"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

SIGNUPS_PER_SECOND = 100
RETENTION_SECONDS = 24 * 3600
"""The scheduler's outbox and token retention (its defaults)."""
OUTBOX_ROWS_PER_USER = SIGNUPS_PER_SECOND * RETENTION_SECONDS / 1_000_000
"""8.64: the issue's 8.64 M outbox rows for 1 M accounts."""
RECONCILE_AFTER_SECONDS = 300
UNVERIFIED_SECONDS = 7 * 24 * 3600
"""The scheduler's defaults: reconcile rows unchecked for 5 minutes, purge accounts
unverified for 7 days."""
USER_SPAN_SECONDS = 90 * 24 * 3600
"""Accounts were created over the last 90 days (the unverified ones within 7)."""
LOADER_VERSION = 1
"""Part of a kept template's name: raise it when the rows written change."""
INTERNAL_TOKEN = secrets.token_urlsafe(24)
GOAL_RATIO = 1.5

OPERATIONS = (
    "signup",
    "login",
    "resend",
    "delete",
    "relay",
    "outbox_purge",
    "token_purge",
    "unverified_purge",
    "reconcile",
)
PURGES = ("outbox_purge", "token_purge", "unverified_purge")


@dataclass(frozen=True)
class SizePlan:
    users: int
    samples: int
    """Requests of each kind (signup, login, resend, deletion) per database."""
    passes: int
    """Runs of each job per database."""
    batch: int
    """Rows each purge and reconciliation pass has to do (the relay: its batch of 200)."""


FULL = SizePlan(users=1_000_000, samples=60, passes=15, batch=1000)
QUICK = SizePlan(users=5_000, samples=6, passes=3, batch=100)
RELAY_BATCH = 200
"""HERALD_OUTBOX_BATCH_SIZE's default: one relay pass claims this many."""


# --- the rows ----------------------------------------------------------------------------

USERS_SQL = """
INSERT INTO users (id, email, display_name, password_hash, created_at, email_verified_at,
                   verification_reminded_at, token_version)
SELECT md5('u' || n)::uuid, 'size-' || n || '@example.com', 'Size User ' || n, $1,
       c,
       CASE WHEN unverified THEN NULL ELSE c + make_interval(secs => 60 + n % 3600) END,
       CASE WHEN unverified AND c < $2 - interval '1 day' THEN c + interval '1 day' END,
       CASE WHEN n % 20 = 0 THEN 1 ELSE 0 END
FROM generate_series($3::bigint, $4::bigint) AS n,
     LATERAL (SELECT n % 10 = 0 AS unverified) AS v,
     LATERAL (SELECT $2::timestamptz - make_interval(
         secs => CASE WHEN unverified THEN n * 7919 % $5 ELSE n * 7919 % $6 END) AS c) AS t
"""
"""Account ``n``: id ``md5('u' || n)``, address ``size-<n>@example.com``; one in ten
unverified (``n % 10 = 0``, all younger than the purge's 7 days)."""

# One series drives both tables, so each link's token row matches its outbox row.
# Kinds (n % 100): 0-74 welcome, 75-84 verification, 85-90 password reset,
# 91-95 account exists, 96-99 password changed. n = 1 is the newest row.
_SERIES = """
FROM generate_series($2::bigint, $3::bigint) AS n,
     LATERAL (SELECT $1::timestamptz - make_interval(secs => n * $5::float8 / $4) AS created,
                     1 + (n * 2654435761) % $6 AS u,
                     n % 100 AS kind) AS a,
     LATERAL (SELECT md5('u' || u)::uuid AS uid,
                     CASE WHEN kind < 85 THEN created + interval '48 hours'
                          ELSE created + interval '1 hour' END AS expires,
                     created < $1::timestamptz - make_interval(secs => $7) AS settled) AS b
"""

OUTBOX_SQL = (
    """
INSERT INTO outbox (message_id, task, queue, payload, created_at, available_at, attempts,
                    relayed_at, checked_at, settled_at, settled_as{user_column})
SELECT mid,
       CASE WHEN kind < 75 THEN 'send_welcome_email'
            WHEN kind < 85 THEN 'send_verification_email'
            WHEN kind < 91 THEN 'send_password_reset_email'
            WHEN kind < 96 THEN 'send_account_exists_email'
            ELSE 'send_password_changed_email' END,
       'notifier',
       jsonb_build_object(
           'schema_version', CASE WHEN kind < 75 THEN 2 ELSE 1 END,
           'message_id', mid, 'user_id', uid,
           'email', 'size-' || u || '@example.com', 'display_name', 'Size User ' || u,
           'requested_at', to_char(created AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
           'request_id', md5('r' || n))
       || CASE WHEN kind < 91 THEN jsonb_build_object(
              CASE WHEN kind < 85 THEN 'verification' ELSE 'reset' END,
              jsonb_build_object(
                  'token_id', rtrim(translate(encode(substr(sha256(('k' || n)::bytea), 1, 16),
                                                     'base64'), '+/', '-_'), '='),
                  'expires_at',
                  to_char(expires AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')))
          ELSE '{}'::jsonb END
       || CASE WHEN kind BETWEEN 75 AND 84 THEN jsonb_build_object(
              'reason', CASE WHEN n % 3 = 0 THEN 'reminder' ELSE 'requested' END)
          ELSE '{}'::jsonb END,
       created, created + interval '1 second',
       CASE WHEN n % 5000 = 7 THEN 1 ELSE 0 END,
       relayed, relayed,
       CASE WHEN settled THEN created + make_interval(secs => $7 + n % 60) END,
       CASE WHEN NOT settled THEN NULL
            WHEN n % 1000 = 0 THEN 'dead' WHEN n % 1000 = 1 THEN 'skipped'
            ELSE 'delivered' END{user_value}
"""
    + _SERIES
    + """,
     LATERAL (SELECT gen_random_uuid() AS mid,
                     created + CASE WHEN n % 5000 = 7 THEN interval '1.2 seconds'
                                    ELSE interval '6 milliseconds' END AS relayed) AS c
"""
)
"""Relayed at once (one in 5,000 by the relay after a failed push), settled 5-6 min
later (one in 1,000 dead, one in 1,000 skipped); the last 5 minutes not settled yet."""

TOKENS_SQL = (
    """
INSERT INTO email_tokens (id, user_id, purpose, fingerprint, created_at, expires_at, used_at)
SELECT gen_random_uuid(), uid,
       CASE WHEN kind < 85 THEN 'verify_email' ELSE 'reset_password' END,
       encode(sha256(('f' || n)::bytea), 'hex'),
       created, expires,
       CASE WHEN used < least($1::timestamptz, expires) THEN used END
"""
    + _SERIES
    + """,
     LATERAL (SELECT CASE WHEN kind < 85 AND n % 10 < 6
                          THEN created + make_interval(secs => 30 + n % 7200)
                          WHEN kind >= 85 AND n % 10 < 7
                          THEN created + make_interval(secs => 30 + n % 600) END AS used) AS c
WHERE kind < 91
"""
)
"""A token per emailed link: six in ten verification links and seven in ten reset
links spent (within 2 h and 10 min)."""

TABLES = ("users", "outbox", "email_tokens", "idempotency_keys")
"""The loaded tables, and every table whose constraints refer to them (idempotency_keys,
left empty, holds a foreign key to users)."""
CHUNK = 200_000
"""Rows per INSERT: one statement per chunk keeps each transaction's memory bounded."""


def password_hash() -> str:
    """One real argon2id hash of ``PASSWORD`` with the API's parameters."""
    settings = ApiSettings()
    return PasswordHasher(
        time_cost=settings.argon2_time_cost,
        memory_cost=settings.argon2_memory_kib,
        parallelism=settings.argon2_parallelism,
        type=Type.ID,
    ).hash(PASSWORD)


def outbox_rows(users: int) -> int:
    return round(users * OUTBOX_ROWS_PER_USER)


def chunks(total: int) -> Iterator[tuple[int, int]]:
    for start in range(1, total + 1, CHUNK):
        yield start, min(total, start + CHUNK - 1)


@dataclass
class Schema:
    """The secondary indexes and the constraints of the loaded tables, as PostgreSQL
    itself spells them (so the rebuild is exactly what the migrations made)."""

    constraints: list[tuple[str, str, str, str]]
    """(table, name, type, definition)."""
    indexes: list[tuple[str, str]]
    """(name, CREATE INDEX statement) of indexes that back no constraint."""

    @classmethod
    async def read(cls, conn: asyncpg.Connection) -> Schema:
        constraints = await conn.fetch(
            "SELECT conrelid::regclass::text, conname, contype::text, pg_get_constraintdef(oid) "
            "FROM pg_constraint WHERE conrelid::regclass::text = ANY($1) "
            "AND contype IN ('p', 'u', 'f')",
            list(TABLES),
        )
        indexes = await conn.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = ANY($1) "
            "AND indexname NOT IN (SELECT conname FROM pg_constraint)",
            list(TABLES),
        )
        return cls([tuple(row) for row in constraints], [tuple(row) for row in indexes])

    async def drop(self, conn: asyncpg.Connection) -> None:
        for table, name, kind, _ in sorted(self.constraints, key=lambda c: c[2] != "f"):
            await conn.execute(f'ALTER TABLE "{table}" DROP CONSTRAINT "{name}"')
            del kind
        for name, _ in self.indexes:
            await conn.execute(f'DROP INDEX "{name}"')

    def rebuild(self) -> tuple[list[str], list[str]]:
        """The statements that make the indexes and keys again, and then the foreign keys."""
        first = [definition for _, definition in self.indexes] + [
            f'ALTER TABLE "{table}" ADD CONSTRAINT "{name}" {definition}'
            for table, name, kind, definition in self.constraints
            if kind != "f"
        ]
        last = [
            f'ALTER TABLE "{table}" ADD CONSTRAINT "{name}" {definition}'
            for table, name, kind, definition in self.constraints
            if kind == "f"
        ]
        return first, last


async def _loader(url: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(url, command_timeout=None)
    await conn.execute(
        "SET synchronous_commit = off; SET maintenance_work_mem = '1GB'; "
        "SET max_parallel_maintenance_workers = 1"
    )
    return conn


Statement = tuple[str, tuple[object, ...]]


async def _run_all(url: str, statements: Sequence[Statement], *, connections: int = 1) -> None:
    """Run ``statements`` on ``connections`` connections, each taking the next one left."""
    todo = iter(statements)

    async def worker() -> None:
        conn = await _loader(url)
        try:
            for sql, args in todo:
                await conn.execute(sql, *args)
        finally:
            await conn.close()

    await asyncio.gather(*(worker() for _ in range(connections)))


async def load(url: str, *, users: int, with_outbox: bool, t0: float) -> dict[str, float]:
    """Write ``users`` accounts (and, ``with_outbox``, their outbox rows and link tokens)
    into the migrated, empty database at ``url``, as of the unix time ``t0``."""
    began = time.perf_counter()
    now = _timestamp(t0)
    hashed = password_hash()
    rows = outbox_rows(users) if with_outbox else 0
    conn = await _loader(url)
    try:
        schema = await Schema.read(conn)
        await schema.drop(conn)
    finally:
        await conn.close()
    user_inserts: list[Statement] = [
        (USERS_SQL, (hashed, now, lo, hi, UNVERIFIED_SECONDS, USER_SPAN_SECONDS))
        for lo, hi in chunks(users)
    ]
    common = (RETENTION_SECONDS, users, RECONCILE_AFTER_SECONDS)
    conn = await asyncpg.connect(url)
    try:
        with_user = await has_outbox_user_id(conn)
    finally:
        await conn.close()
    outbox_sql = OUTBOX_SQL.replace("{user_column}", ", user_id" if with_user else "").replace(
        "{user_value}", ",\n       uid" if with_user else ""
    )
    outbox_inserts: list[Statement] = [
        (outbox_sql, (now, lo, hi, rows, *common)) for lo, hi in chunks(rows)
    ]
    token_inserts: list[Statement] = [
        (TOKENS_SQL, (now, lo, hi, rows, *common)) for lo, hi in chunks(rows)
    ]
    # Two cores: two connections, each taking the next statement left.
    await _run_all(url, user_inserts + outbox_inserts + token_inserts, connections=2)
    inserted = time.perf_counter()
    first, last = schema.rebuild()
    await _run_all(url, [(sql, ()) for sql in sorted(first, key=_index_weight)], connections=2)
    await _run_all(url, [(sql, ()) for sql in last])
    indexed = time.perf_counter()
    conn = await _loader(url)
    try:
        await conn.execute("VACUUM (ANALYZE) users, outbox, email_tokens")
        tokens = await conn.fetchval("SELECT count(*) FROM email_tokens")
        size = await conn.fetchval("SELECT pg_database_size(current_database())")
    finally:
        await conn.close()
    done = time.perf_counter()
    return {
        "users": users,
        "outbox_rows": rows,
        "tokens": tokens,
        "insert_seconds": inserted - began,
        "index_seconds": indexed - inserted,
        "vacuum_seconds": done - indexed,
        "load_seconds": done - began,
        "database_bytes": size,
    }


def _index_weight(statement: str) -> int:
    """The big tables' indexes first, so the two connections end at about the same time."""
    return 0 if "outbox" in statement else 1 if "email_tokens" in statement else 2


def _timestamp(unix: float) -> datetime:
    return datetime.fromtimestamp(unix, UTC)


async def check_payloads(url: str) -> None:
    """Every kind of loaded row decodes as its task's message (or the load is wrong)."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT DISTINCT ON (task) task, queue, payload FROM outbox ORDER BY task"
        )
    finally:
        await conn.close()
    for row in rows:
        message_of(
            OutboxMessage(
                message_id=uuid.uuid4(),
                task=row["task"],
                queue=row["queue"],
                payload=json.loads(row["payload"]),
            )
        )


async def has_outbox_user_id(conn: asyncpg.Connection) -> bool:
    """Whether the schema has ``outbox.user_id`` (migration 0008; older revisions: not)."""
    return bool(
        await conn.fetchval(
            "SELECT count(*) FROM information_schema.columns "
            "WHERE table_name = 'outbox' AND column_name = 'user_id'"
        )
    )


# --- the measures ------------------------------------------------------------------------


def user_email(n: int) -> str:
    return f"size-{n}@example.com"


def user_id(n: int) -> uuid.UUID:
    """Account ``n``'s id, as ``USERS_SQL`` makes it."""
    return uuid.UUID(hashlib.md5(f"u{n}".encode(), usedforsecurity=False).hexdigest())


def pick(users: int, count: int, *, unverified: bool, offset: int = 0) -> list[int]:
    """``count`` accounts spread over ``1..users``: unverified ones (``n % 10 = 0``) or
    verified ones; ``offset`` (0-8) gives another set of verified ones."""
    step = max(1, users // 10 // count)
    firsts = [10 * (1 + i * step) for i in range(count)]
    return firsts if unverified else [n + 1 + offset for n in firsts]


def sample_users(plan: SizePlan) -> int:
    """The accounts of the empty database: enough for every request the plan makes."""
    return 10 * plan.samples + 10


@dataclass
class Side:
    """One database under measure, its API server, and what was measured on it."""

    name: str
    url: str
    users: int
    t0: float
    """When its rows were written (unix time): ages are shifted by the time since."""
    namespace: str
    port: int
    db: asyncpg.Connection | None = None
    client: httpx.AsyncClient | None = None
    times: dict[str, list[float]] = field(default_factory=dict)

    def age(self, seconds: int) -> int:
        """``seconds`` as a job's ``older_than_seconds``, shifted as the rows aged."""
        return seconds + math.ceil(time.time() - self.t0)

    @property
    def queue_name(self) -> str:
        return queues.queue_name(queues.NOTIFIER, namespace=self.namespace)

    @property
    def conn(self) -> asyncpg.Connection:
        assert self.db is not None
        return self.db

    @property
    def http(self) -> httpx.AsyncClient:
        assert self.client is not None
        return self.client

    async def settle_stats(self, table: str) -> None:
        """After rows were added: ANALYZE where autovacuum would (over 10 % new rows,
        so on the empty database only)."""
        if self.name == "empty":
            await self.conn.execute(f"ANALYZE {table}")


Step = Callable[[Side, int], Awaitable[float]]


async def alternate(sides: list[Side], operation: str, count: int, step: Step) -> None:
    """``count`` runs of ``step`` on each side, one side then the other (the order
    swapped each time): whatever else loads the machine meanwhile loads both."""
    for i in range(count):
        for side in sides if i % 2 == 0 else sides[::-1]:
            side.times.setdefault(operation, []).append(await step(side, i))


async def ok(answer: Awaitable[httpx.Response], expected: int = 200) -> httpx.Response:
    response = await answer
    if response.status_code != expected:
        raise RuntimeError(f"{response.request.url}: {response.status_code} {response.text}")
    return response


async def timed(answer: Awaitable[httpx.Response], expected: int = 200) -> float:
    began = time.perf_counter()
    await ok(answer, expected)
    return time.perf_counter() - began


async def log_in(side: Side, n: int) -> str:
    form = {"username": user_email(n), "password": PASSWORD}
    token: str = (await ok(side.http.post("/api/v1/auth/token", data=form))).json()["access_token"]
    return token


async def job(side: Side, path: str, older_than: int, *, expect: str, rows: int) -> float:
    """One call of an internal job; its time, once it did at least ``rows``."""
    began = time.perf_counter()
    answer = await ok(
        side.http.post(
            f"{PREFIX}{path}",
            json={"older_than_seconds": older_than},
            headers={"Authorization": f"Bearer {INTERNAL_TOKEN}"},
        )
    )
    seconds = time.perf_counter() - began
    if answer.json()[expect] < rows:
        raise RuntimeError(f"{path}: {answer.json()} with {rows} rows due")
    return seconds


async def signup(side: Side, i: int) -> float:
    body = signup_body(recipient(f"size{side.name}", i))
    return await timed(side.http.post("/api/v1/users", json=body), 202)


RESEND_TOKENS = (
    "SELECT array_agg(id) FROM email_tokens "
    "WHERE user_id = $1 AND purpose = 'verify_email' AND used_at IS NULL"
)


async def measure_http(sides: list[Side], plan: SizePlan, r: aioredis.Redis) -> None:
    """Requests and jobs against each side's ``herald-api serve``, one at a time."""
    batch = plan.batch

    async def login(side: Side, i: int) -> float:
        n = pick(side.users, plan.samples, unverified=False)[i]
        began = time.perf_counter()
        await log_in(side, n)
        return time.perf_counter() - began

    async def resend(side: Side, i: int) -> float:
        # The work runs after the 202: timed until its new link token is committed.
        n = pick(side.users, plan.samples, unverified=True)[i]
        before = set(await side.conn.fetchval(RESEND_TOKENS, user_id(n)) or [])
        began = time.perf_counter()
        await ok(side.http.post("/api/v1/auth/verify/resend", json={"email": user_email(n)}), 202)
        while not set(await side.conn.fetchval(RESEND_TOKENS, user_id(n)) or []) - before:
            if time.perf_counter() - began > 30:
                raise TimeoutError(f"no new link token for account {n}")
            await asyncio.sleep(0.001)
        return time.perf_counter() - began

    async def delete(side: Side, i: int) -> float:
        n = pick(side.users, plan.samples, unverified=False, offset=2)[i]
        bearer = {"Authorization": f"Bearer {await log_in(side, n)}"}
        request = side.http.request(
            "DELETE", "/api/v1/users/me", json={"password": PASSWORD}, headers=bearer
        )
        return await timed(request, 204)

    async def outbox_purge(side: Side, _: int) -> float:
        # Rows settled a little longer ago than the retention: due now.
        await side.conn.execute(
            "INSERT INTO outbox (message_id, task, queue, payload, created_at, available_at, "
            "relayed_at, checked_at, settled_at, settled_as) "
            "SELECT gen_random_uuid(), 'send_password_changed_email', 'notifier', "
            "jsonb_build_object('schema_version', 1), t, t, t, t, t, 'delivered' "
            "FROM generate_series(1, $1), "
            "LATERAL (SELECT now() - make_interval(secs => $2) AS t) AS a",
            batch,
            side.age(RETENTION_SECONDS) + 600,
        )
        await side.settle_stats("outbox")
        older = side.age(RETENTION_SECONDS)
        return await job(side, PURGE_OUTBOX.path, older, expect="deleted", rows=batch)

    async def token_purge(side: Side, _: int) -> float:
        owners = [user_id(n) for n in pick(side.users, plan.samples, unverified=False, offset=4)]
        await side.conn.execute(
            "INSERT INTO email_tokens (id, user_id, purpose, fingerprint, created_at, expires_at) "
            "SELECT gen_random_uuid(), ($3::uuid[])[1 + i % array_length($3::uuid[], 1)], "
            "'verify_email', md5(random()::text) || md5(random()::text), "
            "t - interval '48 hours', t FROM generate_series(1, $1) AS i, "
            "LATERAL (SELECT now() - make_interval(secs => $2) AS t) AS a",
            batch,
            side.age(RETENTION_SECONDS) + 600,
            owners,
        )
        await side.settle_stats("email_tokens")
        older = side.age(RETENTION_SECONDS)
        return await job(side, PURGE_TOKENS.path, older, expect="deleted", rows=batch)

    async def unverified_purge(side: Side, i: int) -> float:
        # Accounts never verified, a little older than the 7 days, each with its link.
        await side.conn.execute(
            "WITH doomed AS (INSERT INTO users (id, email, display_name, password_hash, "
            "created_at) SELECT gen_random_uuid(), 'doomed-' || $3 || '-' || i || "
            "'@example.com', 'Doomed', $4, now() - make_interval(secs => $2) "
            "FROM generate_series(1, $1) AS i RETURNING id, created_at) "
            "INSERT INTO email_tokens (id, user_id, purpose, fingerprint, created_at, expires_at) "
            "SELECT gen_random_uuid(), id, 'verify_email', "
            "md5(random()::text) || md5(random()::text), created_at, "
            "created_at + interval '48 hours' FROM doomed",
            batch,
            side.age(UNVERIFIED_SECONDS) + 600,
            str(i),
            "$argon2id$v=19$m=19456,t=2,p=1$placeholder",
        )
        await side.settle_stats("users")
        await side.settle_stats("email_tokens")
        older = side.age(UNVERIFIED_SECONDS)
        return await job(side, PURGE_UNVERIFIED_USERS.path, older, expect="deleted", rows=batch)

    async def reconcile(side: Side, _: int) -> float:
        # Relayed rows unchecked for longer than the interval, delivered meanwhile.
        ids = await side.conn.fetchval(
            "WITH due AS (INSERT INTO outbox (message_id, task, queue, payload, created_at, "
            "available_at, relayed_at, checked_at) "
            "SELECT gen_random_uuid(), 'send_password_changed_email', 'notifier', "
            "jsonb_build_object('schema_version', 1), t, t, t, t "
            "FROM generate_series(1, $1), "
            "LATERAL (SELECT now() - make_interval(secs => $2) AS t) AS a "
            "RETURNING message_id) SELECT array_agg(message_id::text) FROM due",
            batch,
            side.age(RECONCILE_AFTER_SECONDS) + 600,
        )
        # What the notifier leaves once it sent each: its delivery record.
        async with r.pipeline(transaction=False) as pipe:
            for message_id in ids:
                pipe.set(delivery_record_key(side.queue_name, message_id), "sent:bench", ex=3600)
            await pipe.execute()
        await side.settle_stats("outbox")
        older = side.age(RECONCILE_AFTER_SECONDS)
        return await job(side, RECONCILE_OUTBOX.path, older, expect="delivered", rows=batch)

    for i in range(5):  # warm-up: connections, caches, the hash pool
        for side in sides:
            await signup(side, -1 - i)
    await alternate(sides, "signup", plan.samples, signup)
    await alternate(sides, "login", plan.samples, login)
    await alternate(sides, "resend", plan.samples, resend)
    await alternate(sides, "delete", plan.samples, delete)
    await alternate(sides, "outbox_purge", plan.passes, outbox_purge)
    await alternate(sides, "token_purge", plan.passes, token_purge)
    await alternate(sides, "unverified_purge", plan.passes, unverified_purge)
    await alternate(sides, "reconcile", plan.passes, reconcile)


RELAY_ROWS_SQL = """
INSERT INTO outbox (message_id, task, queue, payload, available_at)
SELECT m, 'send_password_changed_email', 'notifier', jsonb_build_object(
    'schema_version', 1, 'message_id', m, 'user_id', gen_random_uuid(),
    'email', 'relay-' || $2 || '-' || i || '@example.com', 'display_name', 'R',
    'requested_at', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')),
    now() - interval '1 second'
FROM (SELECT i, gen_random_uuid() AS m FROM generate_series(1, $1) AS i) AS a
"""
"""Rows staged while Redis was away (the fast path failed): due for the relay."""


async def measure_relay(sides: list[Side], plan: SizePlan, redis_url: str) -> None:
    """One relay pass over ``RELAY_BATCH`` due rows, ``passes`` times on each side, no
    other relay running (the servers are stopped)."""
    async with contextlib.AsyncExitStack() as stack:
        relays: dict[str, Relay] = {}
        for side in sides:
            engine = create_engine(_api_settings(side, redis_url))
            stack.push_async_callback(engine.dispose)
            queue = queues.connect_queue(redis_url, queues.NOTIFIER, namespace=side.namespace)
            await queue.connect()
            stack.push_async_callback(queue.disconnect)
            relays[side.name] = Relay(
                sessions=session_factory(engine),
                queues={queues.NOTIFIER: queue},
                batch_size=RELAY_BATCH,
                poll_seconds=0.5,
                max_backoff_seconds=1.0,
                push_timeout_seconds=2.0,
            )

        async def relay(side: Side, i: int) -> float:
            await side.conn.execute(RELAY_ROWS_SQL, RELAY_BATCH, str(i))
            await side.settle_stats("outbox")
            began = time.perf_counter()
            result = await relays[side.name].relay_once()
            seconds = time.perf_counter() - began
            if result.relayed.total() != RELAY_BATCH:
                raise RuntimeError(f"a relay pass pushed {result.relayed.total()} rows")
            return seconds

        for side in sides:
            await relays[side.name].relay_once()  # warm-up: the pools' connections
        await alternate(sides, "relay", plan.passes, relay)


def _api_settings(side: Side, redis_url: str) -> ApiSettings:
    return ApiSettings(
        database_url=make_url(side.url)
        .set(drivername="postgresql+asyncpg")
        .render_as_string(hide_password=False),
        redis_url=redis_url,
        queue_namespace=side.namespace,
    )


@contextlib.asynccontextmanager
async def serving(
    sides: list[Side], *, env: dict[str, str], log_dir: Path, redis_url: str
) -> AsyncIterator[tuple[Processes, aioredis.Redis]]:
    """A ``herald-api serve`` per side, each side's client and connection; the
    processes (to stop them early) and a Redis client. Their Redis keys go at the end."""
    procs = Processes(env=env, log_dir=log_dir)
    r = aioredis.from_url(redis_url)
    try:
        async with contextlib.AsyncExitStack() as stack:
            for side in sides:
                procs.start(
                    f"api-{side.name}",
                    str(BIN / "herald-api"),
                    "serve",
                    env=env
                    | {
                        "HERALD_DATABASE_URL": side.url,
                        "HERALD_QUEUE_NAMESPACE": side.namespace,
                        "HERALD_API_PORT": str(side.port),
                    },
                )
                side.db = await asyncpg.connect(side.url)
                stack.push_async_callback(side.db.close)
                side.client = await stack.enter_async_context(
                    httpx.AsyncClient(base_url=f"http://127.0.0.1:{side.port}", timeout=120)
                )
            for side in sides:
                await wait_ready(side.http, "/health/ready", within=60)
            yield procs, r
    finally:
        procs.stop_all()
        with contextlib.suppress(Exception):
            for side in sides:
                await delete_keys(r, f"*{side.namespace}*")
        await r.aclose()


async def measure(
    sides: list[Side], plan: SizePlan, *, env: dict[str, str], log_dir: Path, redis_url: str
) -> None:
    """Both servers up side by side, the requests and jobs; then the relay passes."""
    async with serving(sides, env=env, log_dir=log_dir, redis_url=redis_url) as (procs, r):
        await measure_http(sides, plan, r)
        procs.stop_all()
        await measure_relay(sides, plan, redis_url)


# --- the run -----------------------------------------------------------------------------


def _with_database(url: str, name: str) -> str:
    return (
        make_url(url)
        .set(drivername="postgresql", database=name)
        .render_as_string(hide_password=False)
    )


async def head_revision(url: str) -> str:
    conn = await asyncpg.connect(url)
    try:
        return str(await conn.fetchval("SELECT version_num FROM alembic_version"))
    finally:
        await conn.close()


async def exists(base: str, name: str) -> bool:
    conn = await asyncpg.connect(_with_database(base, "postgres"))
    try:
        return bool(
            await conn.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", name)
        )
    finally:
        await conn.close()


async def comment_of(base: str, name: str) -> str | None:
    conn = await asyncpg.connect(_with_database(base, "postgres"))
    try:
        comment: str | None = await conn.fetchval(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
            name,
        )
        return comment
    finally:
        await conn.close()


def report(times: dict[str, dict[str, list[float]]], loaded: dict[str, float]) -> dict[str, float]:
    results: dict[str, float] = {}
    for operation in OPERATIONS:
        empty, sized = times["empty"][operation], times["size"][operation]
        for q, label in ((0.5, "p50"), (0.99, "p99")):
            e, s = percentile(empty, q), percentile(sized, q)
            results[f"size_{operation}_empty_{label}_ms"] = round(e * 1000, 2)
            results[f"size_{operation}_{label}_ms"] = round(s * 1000, 2)
            results[f"size_{operation}_{label}_ratio"] = round(s / e, 3)
    results["size_purge_p50_ratio"] = max(results[f"size_{p}_p50_ratio"] for p in PURGES)
    results["size_purge_p99_ratio"] = max(results[f"size_{p}_p99_ratio"] for p in PURGES)
    for key, value in loaded.items():
        results[f"size_{key}"] = round(value, 1)
    return results


def render(results: dict[str, float], plan: SizePlan) -> str:
    lines = [
        "| measure | empty p50 / p99 | at size p50 / p99 | ratio p50 / p99 | goal |",
        "| --- | --- | --- | --- | --- |",
    ]
    for operation in OPERATIONS:
        keys = ("empty_p50_ms", "empty_p99_ms", "p50_ms", "p99_ms", "p50_ratio", "p99_ratio")
        e50, e99, s50, s99, r50, r99 = (results[f"size_{operation}_{k}"] for k in keys)
        met = "met" if r50 <= GOAL_RATIO else "NOT met"
        lines.append(
            f"| {operation.replace('_', ' ')} | {e50:.1f} / {e99:.1f} ms | {s50:.1f} / "
            f"{s99:.1f} ms | {r50:.2f} / {r99:.2f} | <= {GOAL_RATIO} (p50): {met} |"
        )
    lines.append(
        f"\nAt size: {int(results['size_users']):,} users, {int(results['size_outbox_rows']):,} "
        f"outbox rows, {int(results['size_tokens']):,} link tokens; "
        f"{results['size_database_bytes'] / 2**30:.1f} GiB; loaded in "
        f"{results['size_load_seconds']:.0f} s (insert {results['size_insert_seconds']:.0f} s, "
        f"indexes {results['size_index_seconds']:.0f} s, vacuum "
        f"{results['size_vacuum_seconds']:.0f} s). {plan.samples} requests of each kind, "
        f"{plan.passes} passes of each job "
        f"({plan.batch} rows each; the relay {RELAY_BATCH})."
    )
    return "\n".join(lines)


async def sized_database(
    base: str, plan: SizePlan, *, empty: str, size: str, keep: bool, made: list[str]
) -> tuple[float, dict[str, float]]:
    """Make ``size`` from the migrated, empty ``empty``: loaded, or copied from the kept
    template of this revision and scale. When its rows were written (unix time), and how
    the load went. Appends each database made to ``made``."""
    revision = await head_revision(_with_database(base, empty))
    template = f"herald_size_t{plan.users}_{revision}_v{LOADER_VERSION}"
    copy = f'CREATE DATABASE "{size}" TEMPLATE "{template}" STRATEGY FILE_COPY'
    if keep and await exists(base, template):
        began = time.perf_counter()
        stored = json.loads(await comment_of(base, template) or "{}")
        made.append(size)
        await admin(base, copy)
        t0: float = stored.pop("t0")
        print(f"[size] copied {template}", file=sys.stderr, flush=True)
        return t0, stored | {"copy_seconds": time.perf_counter() - began}
    target = template if keep else size
    made.append(target)
    await admin(base, f'CREATE DATABASE "{target}" TEMPLATE "{empty}"')
    print(f"[size] loading {plan.users:,} users into {target}", file=sys.stderr, flush=True)
    t0 = time.time()
    loaded = await load(_with_database(base, target), users=plan.users, with_outbox=True, t0=t0)
    print(f"[size] loaded: {loaded}", file=sys.stderr, flush=True)
    if keep:
        comment = json.dumps(loaded | {"t0": t0})
        await admin(base, f"COMMENT ON DATABASE \"{template}\" IS '{comment}'")
        made.append(size)
        await admin(base, copy)
    return t0, loaded


def server_env(redis_url: str) -> dict[str, str]:
    """The servers' environment (fresh secrets, shared with this process's settings)."""
    env = dict(os.environ) | {
        "HERALD_REDIS_URL": redis_url,
        "HERALD_METRICS_PORT": "0",
        "HERALD_LINK_SECRET": os.environ.get("HERALD_LINK_SECRET") or secrets.token_urlsafe(48),
        "HERALD_JWT_SECRET": os.environ.get("HERALD_JWT_SECRET") or secrets.token_urlsafe(48),
        "HERALD_INTERNAL_TOKEN": INTERNAL_TOKEN,
        "HERALD_RATE_LIMITS_ENABLED": "false",
    }
    os.environ.update({k: env[k] for k in ("HERALD_LINK_SECRET", "HERALD_JWT_SECRET")})
    return env


INDEXES_0008 = ("outbox_user_idx", "email_tokens_done_idx")


async def measure_index_cost(
    *, samples: int = 200, redis_url: str | None = None
) -> dict[str, float]:
    """What migration 0008's indexes cost a signup: two empty databases, one without
    them, ``samples`` signups on each, alternately; p50/p99 of each (ms)."""
    base = os.environ.get("HERALD_DATABASE_URL", DEFAULT_DATABASE_URL)
    redis_url = redis_url or os.environ.get("HERALD_REDIS_URL", DEFAULT_REDIS_URL)
    run_id = uuid.uuid4().hex[:8]
    log_dir = Path(tempfile.mkdtemp(prefix=f"herald-size-{run_id}-"))
    env = server_env(redis_url)
    names = {"with": f"herald_size_{run_id}_with", "without": f"herald_size_{run_id}_without"}
    sides = [
        Side(
            kind,
            _with_database(base, name),
            0,
            time.time(),
            f"bench_size_{run_id}_{kind}",
            free_port(),
        )
        for kind, name in names.items()
    ]
    try:
        for side in sides:
            migrate(env | {"HERALD_DATABASE_URL": side.url}, log_dir / "migrate.log")
        conn = await asyncpg.connect(sides[1].url)
        try:
            await conn.execute("".join(f'DROP INDEX "{name}";' for name in INDEXES_0008))
        finally:
            await conn.close()
        async with serving(sides, env=env, log_dir=log_dir, redis_url=redis_url):
            for i in range(5):
                for side in sides:
                    await signup(side, -1 - i)
            await alternate(sides, "signup", samples, signup)
    finally:
        for name in names.values():
            with contextlib.suppress(Exception):
                await admin(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    results = {
        f"index_cost_signup_{side.name}_{label}_ms": round(
            percentile(side.times["signup"], q) * 1000, 2
        )
        for side in sides
        for q, label in ((0.5, "p50"), (0.99, "p99"))
    }
    print(json.dumps(results, indent=1))
    return results


async def measure_size(
    *,
    users: int | None = None,
    quick: bool = False,
    keep: bool = False,
    database_url: str | None = None,
    redis_url: str | None = None,
) -> dict[str, float]:
    """Measure every operation on an empty database and at size; the figures (see
    ``report``: ``size_<operation>_<p50|p99>_ratio`` and the absolute times in ms).

    ``keep``: keep the loaded database as a template and reuse it on the next run.
    """
    plan = QUICK if quick else FULL
    if users is not None:
        plan = SizePlan(users=users, samples=plan.samples, passes=plan.passes, batch=plan.batch)
    base = database_url or os.environ.get("HERALD_DATABASE_URL", DEFAULT_DATABASE_URL)
    redis_url = redis_url or os.environ.get("HERALD_REDIS_URL", DEFAULT_REDIS_URL)
    run_id = uuid.uuid4().hex[:8]
    log_dir = Path(tempfile.mkdtemp(prefix=f"herald-size-{run_id}-"))
    env = server_env(redis_url)
    empty_name, size_name = f"herald_size_{run_id}_empty", f"herald_size_{run_id}"
    empty_url, size_url = _with_database(base, empty_name), _with_database(base, size_name)
    made = [empty_name]
    namespace = f"bench_size_{run_id}"
    print(f"[size] run {run_id}; logs in {log_dir}", file=sys.stderr, flush=True)
    try:
        migrate(env | {"HERALD_DATABASE_URL": empty_url}, log_dir / "migrate.log")
        t0, loaded = await sized_database(
            base, plan, empty=empty_name, size=size_name, keep=keep, made=made
        )
        await check_payloads(size_url)
        empty_users = sample_users(plan)
        await load(empty_url, users=empty_users, with_outbox=False, t0=time.time())
        sides = [
            Side("empty", empty_url, empty_users, time.time(), f"{namespace}_e", free_port()),
            Side("size", size_url, plan.users, t0, f"{namespace}_s", free_port()),
        ]
        await measure(sides, plan, env=env, log_dir=log_dir, redis_url=redis_url)
    finally:
        for name in made:
            if keep and name.startswith("herald_size_t"):
                continue
            with contextlib.suppress(Exception):
                await admin(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    results = report({side.name: side.times for side in sides}, loaded)
    print(render(results, plan))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.size", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--users", type=int, help=f"accounts at size (default {FULL.users:,})")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK.users:,} accounts and fewer samples: check the harness",
    )
    parser.add_argument(
        "--index-cost",
        action="store_true",
        help="only: signups on an empty database with and without migration 0008's indexes",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the loaded database as a template and reuse it next time",
    )
    args = parser.parse_args(argv)
    # The relay passes run in this process: their info lines would bury the table.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    began = time.perf_counter()
    if args.index_cost:
        asyncio.run(measure_index_cost())
        return 0
    results = asyncio.run(measure_size(users=args.users, quick=args.quick, keep=args.keep))
    load = os.getloadavg()
    print(
        f"\n{os.cpu_count()} cores; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
        f"after; total {time.perf_counter() - began:.0f} s"
    )
    print(json.dumps(results, indent=1, sort_keys=True), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
