"""The database engine and sessions, what counts as "the database is unavailable", and
batched deletes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg
from sqlalchemy import ColumnElement, Delete, Select, any_, func
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Mapped
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from herald_api.core.settings import Settings

T = TypeVar("T")

CONNECTIVITY_ERRORS: tuple[type[Exception], ...] = (
    sa_exc.DBAPIError,  # OperationalError, InterfaceError, or any with connection_invalidated
    # Not sa_exc.TimeoutError (no pooled connection became free in time): the pool is
    # exhausted, PostgreSQL may be fine; admission sheds the request.
    # asyncpg's own errors reach us unwrapped while a connection is being opened.
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InterfaceError,
    OSError,  # ConnectionRefusedError & co. while connecting
    TimeoutError,  # asyncpg's connect timeout
)
"""Exception types that may mean PostgreSQL is unreachable; ``is_unavailable`` decides."""

DATABASE_ERRORS: tuple[type[Exception], ...] = (
    sa_exc.SQLAlchemyError,
    asyncpg.PostgresError,
    *CONNECTIVITY_ERRORS,
)
"""Anything a database call may raise that is the database's fault, not a bug of ours."""


def create_engine(settings: Settings) -> AsyncEngine:
    """The engine of every session: at most pool size + overflow connections, and a
    request waits at most the pool timeout for one (then ``sa_exc.TimeoutError``, shed)."""
    return _engine(
        settings,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
        pool_timeout=settings.database_pool_timeout_seconds,
    )


def create_probe_engine(settings: Settings) -> AsyncEngine:
    """An engine of one connection for /health/ready alone, so that a readiness probe
    never waits for (or takes) a connection of the requests' pool."""
    return _engine(
        settings, pool_size=1, max_overflow=0, pool_timeout=settings.readiness_timeout_seconds
    )


def _engine(
    settings: Settings, *, pool_size: int, max_overflow: int, pool_timeout: float
) -> AsyncEngine:
    connect_args: dict[str, Any] = {"timeout": settings.database_connect_timeout_seconds}
    if settings.database_pooler == "transaction":
        connect_args |= TRANSACTION_POOLER_CONNECT_ARGS
    return create_async_engine(
        settings.sqlalchemy_url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout,
        pool_pre_ping=True,
        # A statement's error must never carry its parameters (a password hash)
        # into a log line or an error body.
        hide_parameters=True,
        connect_args=connect_args,
    )


def _unique_statement_name() -> str:
    return f"__asyncpg_{uuid.uuid4()}__"


TRANSACTION_POOLER_CONNECT_ARGS: dict[str, Any] = {
    # asyncpg's own cache of named prepared statements: a name prepared on one
    # server connection is unknown (or another statement) on the next.
    "statement_cache_size": 0,
    # SQLAlchemy's asyncpg dialect keeps a cache of its own.
    "prepared_statement_cache_size": 0,
    # The statements SQLAlchemy still prepares (to read result columns) get
    # names no other client can have prepared on the same server connection.
    "prepared_statement_name_func": _unique_statement_name,
}
"""What SQLAlchemy's asyncpg dialect docs ("Prepared Statement Name with PGBouncer") and
asyncpg's FAQ prescribe behind a transaction-mode pooler."""


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


UNAVAILABLE_SQLSTATE_CLASSES = ("08", "53", "57")
"""SQLSTATE classes that mean "not now" rather than "wrong statement": connection
exception, insufficient resources (too many connections), operator intervention
(starting up, shutting down, statement cancelled)."""


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means PostgreSQL cannot be reached (as opposed to a bad statement)."""
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        # A server still starting up refuses the connection with 57P03, which
        # SQLAlchemy wraps as a plain DBAPIError, its connection not invalidated.
        sqlstate = getattr(exc.orig, "sqlstate", None) or ""
        return exc.connection_invalidated or sqlstate[:2] in UNAVAILABLE_SQLSTATE_CLASSES
    return isinstance(exc, CONNECTIVITY_ERRORS)


async def delete_in_batches(
    sessions: async_sessionmaker[AsyncSession], statement: Delete, *, batch_size: int
) -> int:
    """Run ``statement`` (a DELETE of at most ``batch_size`` rows) in one short
    transaction after another until a batch comes back short; the rows deleted.

    A long backlog is purged without one long transaction holding its locks.
    """
    deleted = 0
    while True:
        async with sessions() as session:
            result = await session.exec(statement)
            await session.commit()
        batch = int(result.rowcount)
        deleted += batch
        if batch < batch_size:
            return deleted


def among(
    column: Mapped[T] | ColumnElement[T], ids: SelectOfScalar[T] | Select[tuple[T]]
) -> ColumnElement[bool]:
    """``column = ANY(ARRAY(ids))``: the batch's ids are read first, once, then each row
    is found by ``column``'s index (or, for ``ctid``, by its address: a TID scan).

    With ``column IN (ids)`` the planner may join instead, and when it expects
    thousands of ids (a batch's LIMIT) it reads the whole table to hash them: a
    purge batch then costs a scan of the table however few rows are due.
    """
    return column == any_(func.array(ids.scalar_subquery()))


def utcnow() -> datetime:
    """Now, in UTC: the Python-side default of every timestamp column."""
    return datetime.now(UTC)
