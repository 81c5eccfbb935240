"""``Idempotency-Key`` (the IETF httpapi draft's header, as in Stripe's API): a POST that
sends email, repeated with the same key and body within the window, gets its first
answer again and causes nothing new.

A key is scoped (route, and caller for authenticated routes) and recorded in the
transaction of the change its request caused, with the first answer, so no crash can
leave an email staged with its key unrecorded, or the reverse. Only the key's SHA-256
and an HMAC of the body are stored (a body holds a password). The table's primary key
makes a concurrent duplicate wait for the first one's transaction, then take its answer.
docs/api.md, "Idempotency-Key", says what each case answers and why.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from dataclasses import dataclass
from datetime import timedelta

import structlog
from prometheus_client import Counter
from pydantic import BaseModel, SecretStr
from sqlalchemy import exc as sa_exc
from sqlalchemy import func, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from herald_api.accounts.models import IdempotencyKey

log = structlog.get_logger(__name__)

KEY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
"""Marks an answer that is the stored first answer to an earlier request (Stripe's name)."""

MAX_KEY_LENGTH = 255
_KEY_CHARACTERS = rf"[!#-\[\]-~]{{1,{MAX_KEY_LENGTH}}}"
KEY_PATTERN = rf'^(?:{_KEY_CHARACTERS}|"{_KEY_CHARACTERS}")$'
"""1 to 255 visible ASCII characters but ``"`` and ``\\``, bare or as a structured-field
string (in double quotes, as the draft writes it)."""

KEY_DESCRIPTION = (
    "Makes a retry of this request safe: a repeat with the same key and the same body "
    "within the window (24 h by default) gets the first answer again, marked "
    f"`{REPLAYED_HEADER}: true`, and sends no second email. The same key with another body "
    "gets 422; one that arrives while the first is still being processed may get 409. "
    f'Up to {MAX_KEY_LENGTH} visible ASCII characters (no `"` or `\\`), bare or in double '
    "quotes; a random UUID per operation is best."
)

LOCK_NOT_AVAILABLE = "55P03"
"""SQLSTATE of a lock wait that reached ``lock_timeout``."""

OUTCOMES = Counter(
    "herald_api_idempotency_total",
    "Requests sent with an Idempotency-Key that did not run anew, by outcome: replayed "
    "(the first answer again), reused (422: another body), in_progress (409), skipped "
    "(work after the response dropped as a duplicate).",
    ["outcome"],
)


class IdempotencyError(Exception):
    """The request's key is held by another request: answered without running again."""


class AlreadyAnsweredError(IdempotencyError):
    """The key holds a live answer to the same body: send it again."""

    def __init__(self, *, status_code: int, answer: str) -> None:
        super().__init__(status_code)
        self.status_code = status_code
        self.answer = answer


class KeyReusedError(IdempotencyError):
    """The key holds a live answer to another body (422)."""


class KeyInProgressError(IdempotencyError):
    """Another request with the key is still in its transaction (409)."""


def unquote(key: str) -> str:
    """``key`` without the double quotes of a structured-field string."""
    return key[1:-1] if len(key) >= 2 and key[0] == key[-1] == '"' else key


@dataclass(frozen=True)
class Claim:
    """A request's key, scoped and hashed, its body's fingerprint, and the answer it
    gets: what the use case records in its transaction (``record``)."""

    store: IdempotencyStore
    key_hash: bytes
    fingerprint: bytes
    status_code: int
    answer: str

    async def stored(self, session: AsyncSession) -> AlreadyAnsweredError | None:
        """The live answer this key holds (an answer to another body raises
        ``KeyReusedError``); ``None`` if the key is free."""
        row = (
            await session.exec(
                select(IdempotencyKey).where(
                    col(IdempotencyKey.key_hash) == self.key_hash,
                    col(IdempotencyKey.expires_at) > func.now(),
                )
            )
        ).first()
        if row is None:
            return None
        if not hmac.compare_digest(row.fingerprint, self.fingerprint):
            OUTCOMES.labels("reused").inc()
            log.info("idempotency.key_reused")
            raise KeyReusedError
        return AlreadyAnsweredError(status_code=row.status_code, answer=row.answer)

    async def record(self, session: AsyncSession, *, user_id: uuid.UUID | None) -> None:
        """Record the key with its answer in ``session``'s open transaction, for
        ``user_id``'s account (``None``: none).

        Raises ``AlreadyAnsweredError`` if another request recorded it first (this one waits for
        that one's transaction to end), ``KeyReusedError`` if that one had another
        body, ``KeyInProgressError`` if it is still in its transaction after the wait.
        The caller's transaction is then to be rolled back: it must cause nothing.
        """
        values = {
            "key_hash": self.key_hash,
            "user_id": user_id,
            "fingerprint": self.fingerprint,
            "status_code": self.status_code,
            "answer": self.answer,
            "expires_at": func.now() + self.store.window,
        }
        row = insert(IdempotencyKey).values(**values)
        statement = row.on_conflict_do_update(
            index_elements=[col(IdempotencyKey.key_hash)],
            # An expired row the purge has not reached yet is a free key.
            set_={name: row.excluded[name] for name in values if name != "key_hash"},
            where=col(IdempotencyKey.expires_at) <= func.now(),
        ).returning(col(IdempotencyKey.key_hash))
        connection = await session.connection()
        # A duplicate in flight holds the key's row: wait for its transaction, not forever.
        await connection.execute(text(f"SET LOCAL lock_timeout = {self.store.wait_ms}"))
        try:
            recorded = (await session.exec(statement)).first()
        except sa_exc.DBAPIError as error:
            if getattr(error.orig, "sqlstate", None) != LOCK_NOT_AVAILABLE:
                raise
            OUTCOMES.labels("in_progress").inc()
            log.info("idempotency.in_progress")
            raise KeyInProgressError from None
        await connection.execute(text("SET LOCAL lock_timeout TO DEFAULT"))
        if recorded is not None:
            return
        replayed = await self.stored(session)
        if replayed is None:
            # Recorded and expired between the two statements: a request a day old.
            raise KeyInProgressError
        OUTCOMES.labels("replayed").inc()
        log.info("idempotency.replayed", after="wait")
        raise replayed

    async def claim(self, session: AsyncSession, *, user_id: uuid.UUID | None) -> bool:
        """``record`` for work done after the response: whether this request holds the
        key now; ``False`` (logged) when another one did the work or is doing it."""
        try:
            await self.record(session, user_id=user_id)
        except IdempotencyError as error:
            OUTCOMES.labels("skipped").inc()
            log.info("idempotency.duplicate_skipped", reason=type(error).__name__)
            return False
        return True

    async def link(self, session: AsyncSession, *, user_id: uuid.UUID) -> None:
        """Bind the key recorded in ``session``'s transaction to ``user_id``'s account."""
        await session.exec(
            update(IdempotencyKey)
            .where(col(IdempotencyKey.key_hash) == self.key_hash)
            .values(user_id=user_id)
        )


@dataclass(frozen=True)
class IdempotencyKeys:
    """One request's ``Idempotency-Key`` (``None``: it sent none) in its scope, and its body."""

    store: IdempotencyStore
    key: str | None
    scope: str
    """The route, and the caller for an authenticated route."""
    body: bytes

    async def begin(self, status_code: int, answer: BaseModel) -> Claim | None:
        """The claim of a request that will answer ``answer`` with ``status_code``;
        ``None`` without a key.

        Raises ``AlreadyAnsweredError`` when the key already holds the answer to this body (the
        request then does nothing), ``KeyReusedError`` when it holds another body's.
        """
        if self.key is None:
            return None
        claim = Claim(
            store=self.store,
            key_hash=self.store.key_hash(self.scope, self.key),
            fingerprint=self.store.fingerprint(self.body),
            status_code=status_code,
            answer=answer.model_dump_json(),
        )
        async with self.store.sessions() as session:
            replayed = await claim.stored(session)
        if replayed is not None:
            OUTCOMES.labels("replayed").inc()
            log.info("idempotency.replayed", after="lookup")
            raise replayed
        return claim


@dataclass(frozen=True)
class IdempotencyStore:
    """The idempotency keys table, its window and wait, and the key of the body HMAC."""

    sessions: async_sessionmaker[AsyncSession]
    secret: bytes
    window: timedelta
    wait: timedelta

    @classmethod
    def from_settings(
        cls,
        sessions: async_sessionmaker[AsyncSession],
        *,
        jwt_secret: SecretStr,
        hours: int,
        wait_seconds: float,
    ) -> IdempotencyStore:
        # A key of its own, derived from the JWT key: a fingerprint is no token.
        secret = hmac.digest(
            jwt_secret.get_secret_value().encode(), b"herald idempotency fingerprint", "sha256"
        )
        return cls(
            sessions=sessions,
            secret=secret,
            window=timedelta(hours=hours),
            wait=timedelta(seconds=wait_seconds),
        )

    @property
    def wait_ms(self) -> int:
        return max(1, round(self.wait.total_seconds() * 1000))

    def for_request(self, *, key: str | None, scope: str, body: bytes) -> IdempotencyKeys:
        return IdempotencyKeys(
            store=self, key=None if key is None else unquote(key), scope=scope, body=body
        )

    @staticmethod
    def key_hash(scope: str, key: str) -> bytes:
        """The row's primary key: ``key`` in ``scope`` (scopes never share a row)."""
        return hashlib.sha256(f"{scope}\n{key}".encode()).digest()

    def fingerprint(self, body: bytes) -> bytes:
        """The HMAC of ``body``'s JSON in canonical form (key order and spacing do not
        count), or of its bytes if it is not JSON."""
        try:
            canonical = json.dumps(
                json.loads(body), sort_keys=True, separators=(",", ":"), ensure_ascii=False
            ).encode()
        except ValueError:
            canonical = body
        return hmac.digest(self.secret, canonical, "sha256")
