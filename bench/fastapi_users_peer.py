# /// script
# requires-python = ">=3.11"
# dependencies = [
#     "fastapi-users==15.0.5",
#     "fastapi-users-db-sqlalchemy==7.0.0",
#     "fastapi==0.165.0",
#     "uvicorn==0.54.0",
#     "uvloop==0.23.0",
#     "httptools==0.9.0",
#     "asyncpg==0.32.0",
#     "aiosmtplib==5.1.3",
#     "jinja2==3.1.6",
#     "pydantic==2.14.4",
# ]
# ///
"""The fastapi-users peer: Herald's signup as a FastAPI team that installs a library writes it.

    PYTHONPATH=.:shared/src uv run --locked --script bench/fastapi_users_peer.py serve PORT
    PYTHONPATH=.:shared/src uv run --locked --script bench/fastapi_users_peer.py check

fastapi-users (``POST /auth/register``) on PostgreSQL through its SQLAlchemy
adapter (fastapi-users-db-sqlalchemy, asyncpg), set up as its documentation
shows, with three changes a team copying Herald's choices would make:

- the password helper is fastapi-users' ``PasswordHelper`` over pwdlib's
  ``Argon2Hasher`` with Herald's argon2id parameters (``HERALD_ARGON2_*``, the
  harness passes the API's values); fastapi-users hashes in the event loop
  (``BaseUserManager.create`` calls the helper synchronously), as shipped;
- the user table has a ``display_name`` column and the body a
  ``display_name`` (Herald's ``DisplayName``); the engine has Herald's pool
  settings (``pool_size`` ``HERALD_DATABASE_POOL_SIZE``, ``pool_pre_ping``);
- ``on_after_register`` asks fastapi-users for the verification token
  (``request_verify``: its own JWT, lifetime Herald's verification link's)
  and ``on_after_request_verify`` sends the welcome email with that link
  (``bench.peer_email``: Herald's templates, an ``EmailMessage``, as the other
  peers) with ``aiosmtplib.send``, awaited in the hook: the response waits for
  the relay's 250, and nothing retries or records a failed send.

It runs in its own environment, locked in ``fastapi_users_peer.py.lock``:
fastapi-users-db-sqlalchemy pins ``sqlalchemy<2.1`` and fastapi-users
``email-validator<2.4``, and Herald's workspace is locked on 2.1 and 2.4; the
versions it shares with Herald (FastAPI, uvicorn, uvloop, httptools, asyncpg,
pydantic, aiosmtplib, Jinja2) are Herald's. ``herald_shared`` and ``bench.peer_email``
come from the source tree (``PYTHONPATH``). ``HERALD_DATABASE_URL`` (plain
``postgresql://``), ``HERALD_SMTP_HOST``, ``HERALD_SMTP_PORT``,
``HERALD_JWT_SECRET`` and ``HERALD_LINK_SECRET`` come from the environment.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import aiosmtplib
import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi_users import (  # type: ignore[import-not-found, unused-ignore]
    BaseUserManager,
    FastAPIUsers,
    UUIDIDMixin,
    schemas,
)
from fastapi_users.authentication import (  # type: ignore[import-not-found, unused-ignore]
    AuthenticationBackend,
    BearerTransport,
    JWTStrategy,
)
from fastapi_users.password import PasswordHelper  # type: ignore[import-not-found, unused-ignore]
from fastapi_users_db_sqlalchemy import (  # type: ignore[import-not-found, unused-ignore]
    SQLAlchemyBaseUserTableUUID,
    SQLAlchemyUserDatabase,
)
from pwdlib import PasswordHash  # type: ignore[import-not-found, unused-ignore]
from pwdlib.hashers.argon2 import Argon2Hasher  # type: ignore[import-not-found, unused-ignore]
from pydantic import SecretStr
from sqlalchemy import String
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from bench.peer_email import VERIFY_URL, WelcomeBuilder
from herald_shared.messages import EmailLink, WelcomeEmail
from herald_shared.text import DisplayName
from herald_shared.tokens import new_token_id

REGISTER = "/auth/register"


def setting(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if value is None:
        raise SystemExit(f"{name} is not set")
    return value


DATABASE_URL = setting("HERALD_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/herald")
SECRET = setting("HERALD_JWT_SECRET", "not-a-secret-outside-the-bench-0123456789")
VERIFY_SECONDS = int(setting("HERALD_VERIFICATION_LINK_HOURS", "48")) * 3600
password_helper = PasswordHelper(
    PasswordHash(
        (
            Argon2Hasher(
                time_cost=int(setting("HERALD_ARGON2_TIME_COST", "2")),
                memory_cost=int(setting("HERALD_ARGON2_MEMORY_KIB", "19456")),
                parallelism=int(setting("HERALD_ARGON2_PARALLELISM", "1")),
            ),
        )
    )
)
engine = create_async_engine(
    DATABASE_URL.replace("postgresql://", "postgresql+asyncpg://", 1),
    pool_size=int(setting("HERALD_DATABASE_POOL_SIZE", "10")),
    pool_pre_ping=True,
)
session_maker = async_sessionmaker(engine, expire_on_commit=False)
builder = WelcomeBuilder(
    link_secret=SecretStr(setting("HERALD_LINK_SECRET", SECRET)),
    verify_url=setting("HERALD_VERIFY_URL", VERIFY_URL),
)


class Base(DeclarativeBase):
    pass


class User(SQLAlchemyBaseUserTableUUID, Base):  # type: ignore[misc, unused-ignore]
    __tablename__ = "fastapi_users_user"
    display_name: Mapped[str] = mapped_column(String(length=100))


class UserRead(schemas.BaseUser[uuid.UUID]):  # type: ignore[misc, unused-ignore]
    display_name: str


class UserCreate(schemas.BaseUserCreate):  # type: ignore[misc, unused-ignore]
    display_name: DisplayName


async def send_welcome(user: Any, token: str) -> None:
    message = WelcomeEmail(
        user_id=user.id,
        email=user.email,
        display_name=user.display_name,
        locale="en",
        verification=EmailLink(
            token_id=new_token_id(),
            expires_at=datetime.now(UTC) + timedelta(seconds=VERIFY_SECONDS),
        ),
    )
    await aiosmtplib.send(
        builder.build(message, token=token),
        hostname=setting("HERALD_SMTP_HOST", "127.0.0.1"),
        port=int(setting("HERALD_SMTP_PORT", "1025")),
        timeout=15,
        start_tls=False,
    )


class UserManager(UUIDIDMixin, BaseUserManager[User, uuid.UUID]):  # type: ignore[misc, unused-ignore]
    reset_password_token_secret = SECRET
    verification_token_secret = SECRET
    verification_token_lifetime_seconds = VERIFY_SECONDS

    async def on_after_register(self, user: User, request: Request | None = None) -> None:
        await self.request_verify(user, request)

    async def on_after_request_verify(
        self, user: User, token: str, request: Request | None = None
    ) -> None:
        await send_welcome(user, token)


async def get_async_session() -> AsyncIterator[AsyncSession]:
    async with session_maker() as session:
        yield session


async def get_user_db(
    session: AsyncSession = Depends(get_async_session),  # noqa: B008  (FastAPI's way)
) -> AsyncIterator[Any]:
    yield SQLAlchemyUserDatabase(session, User)


async def get_user_manager(
    user_db: Any = Depends(get_user_db),  # noqa: B008
) -> AsyncIterator[UserManager]:
    yield UserManager(user_db, password_helper)


def get_jwt_strategy() -> Any:
    return JWTStrategy(secret=SECRET, lifetime_seconds=3600)


auth_backend = AuthenticationBackend(
    name="jwt", transport=BearerTransport(tokenUrl="auth/jwt/login"), get_strategy=get_jwt_strategy
)
fastapi_users = FastAPIUsers[User, uuid.UUID](get_user_manager, [auth_backend])


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    yield
    await engine.dispose()


app = FastAPI(title="fastapi-users peer", lifespan=lifespan)
app.include_router(fastapi_users.get_register_router(UserRead, UserCreate), prefix="/auth")


def main(argv: list[str]) -> None:
    command, *rest = argv
    if command == "check":
        return  # the imports worked: the environment is ready
    if command != "serve":
        raise SystemExit(f"unknown command {command!r}")
    uvicorn.run(app, host="127.0.0.1", port=int(rest[0]), log_config=None, access_log=False)


if __name__ == "__main__":
    main(sys.argv[1:])
