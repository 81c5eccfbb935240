"""The BackgroundTasks peer: Herald's signup as many FastAPI apps write it.

    python -m bench.peer_fastapi PORT

One FastAPI route, no middleware, served by uvicorn with the settings
``herald-api serve`` uses. It does what Herald's signup does up to the
commit, with Herald's own code where it can:

- the body is Herald's ``UserCreate`` (the same validation, the common
  password check included);
- the password is hashed with argon2id with Herald's parameters, in
  Starlette's thread pool (``run_in_threadpool``, what FastAPI does with a
  blocking call; Herald uses its own pool of one thread per core);
- one transaction on Herald's engine settings writes the same rows: the user
  (``INSERT ... ON CONFLICT DO NOTHING RETURNING``) and its verification
  token (``herald_api.accounts.links.issue``);
- it answers 202 with the same body.

Then, instead of an outbox row and a queue, FastAPI's ``BackgroundTasks``
builds the welcome email (``bench.peer_email``: Herald's templates, an
``EmailMessage``, as the arq peer does) and sends it in this process with
``aiosmtplib.send`` (one SMTP session per email), after the response is
written. Nothing retries or records a failed send.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiosmtplib
import uvicorn
from argon2 import PasswordHasher, Type
from fastapi import BackgroundTasks, FastAPI, Request, status
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.concurrency import run_in_threadpool

from bench.peer_email import WelcomeBuilder
from herald_api.accounts import links
from herald_api.accounts.links import VERIFY_EMAIL, LinkPolicy
from herald_api.accounts.schemas import Accepted, UserCreate
from herald_api.auth.models import User
from herald_api.core.db import create_engine, session_factory
from herald_api.core.settings import Settings as ApiSettings
from herald_notifier.settings import Settings as NotifierSettings
from herald_shared.messages import WelcomeEmail

DETAIL = "Check your inbox: we sent an email to this address."


@dataclass(frozen=True)
class State:
    sessions: async_sessionmaker[AsyncSession]
    hasher: PasswordHasher
    builder: WelcomeBuilder
    api: ApiSettings
    notifier: NotifierSettings


async def send_welcome(state: State, message: WelcomeEmail) -> None:
    email = state.builder.build(message)
    await aiosmtplib.send(
        email,
        hostname=state.notifier.smtp_host,
        port=state.notifier.smtp_port,
        timeout=state.notifier.smtp_timeout,
        start_tls=False,
    )


SQLALCHEMY_POOL_TIMEOUT = 30.0


def create_app() -> FastAPI:
    api = ApiSettings()
    notifier = NotifierSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Herald's engine, without Herald's admission control: a plain app waits
        # SQLAlchemy's default 30 s for a pooled connection.
        engine = create_engine(
            api.model_copy(update={"database_pool_timeout_seconds": SQLALCHEMY_POOL_TIMEOUT})
        )
        app.state.peer = State(
            sessions=session_factory(engine),
            hasher=PasswordHasher(
                time_cost=api.argon2_time_cost,
                memory_cost=api.argon2_memory_kib,
                parallelism=api.argon2_parallelism,
                type=Type.ID,
            ),
            builder=WelcomeBuilder(
                link_secret=notifier.link_secret, verify_url=str(notifier.verify_url)
            ),
            api=api,
            notifier=notifier,
        )
        yield
        await engine.dispose()

    app = FastAPI(title="BackgroundTasks peer", lifespan=lifespan)

    @app.post("/api/v1/users", status_code=status.HTTP_202_ACCEPTED)
    async def create_user(
        body: UserCreate, request: Request, background: BackgroundTasks
    ) -> Accepted:
        state: State = request.app.state.peer
        password_hash = await run_in_threadpool(state.hasher.hash, body.password.get_secret_value())
        user_id = uuid.uuid4()
        async with state.sessions() as session:
            created = await session.exec(
                insert(User)
                .values(
                    id=user_id,
                    email=body.email,
                    display_name=body.display_name,
                    password_hash=password_hash,
                )
                .on_conflict_do_nothing(index_elements=["email"])
                .returning(col(User.id))
            )
            if created.scalar_one_or_none() is not None:
                link = await links.issue(
                    session,
                    user_id=user_id,
                    purpose=VERIFY_EMAIL,
                    policy=LinkPolicy.from_settings(state.api),
                )
                await session.commit()
                message = WelcomeEmail(
                    user_id=user_id,
                    email=body.email,
                    display_name=body.display_name,
                    verification=link,
                    locale="en",
                )
                background.add_task(send_welcome, state, message)
        return Accepted(email=body.email, detail=DETAIL)

    return app


def main(argv: list[str]) -> None:
    uvicorn.run(
        "bench.peer_fastapi:create_app",
        factory=True,
        host="127.0.0.1",
        port=int(argv[0]),
        log_config=None,
        access_log=False,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
