"""FastAPI dependencies, as ``Annotated`` aliases the routes declare."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from asgi_correlation_id import correlation_id
from fastapi import Depends, Request
from sqlmodel.ext.asyncio.session import AsyncSession

from herald_api.dispatch import Dispatcher
from herald_api.passwords import PasswordHasher
from herald_api.resources import Resources


def get_resources(request: Request) -> Resources:
    resources: Resources = request.app.state.resources
    return resources


ResourcesDep = Annotated[Resources, Depends(get_resources)]


async def get_session(resources: ResourcesDep) -> AsyncIterator[AsyncSession]:
    async with resources.sessions() as session:
        yield session


def get_hasher(resources: ResourcesDep) -> PasswordHasher:
    return resources.hasher


def get_dispatcher(resources: ResourcesDep) -> Dispatcher:
    return resources.dispatcher


def get_request_id() -> str | None:
    return correlation_id.get()


SessionDep = Annotated[AsyncSession, Depends(get_session)]
HasherDep = Annotated[PasswordHasher, Depends(get_hasher)]
DispatcherDep = Annotated[Dispatcher, Depends(get_dispatcher)]
RequestIdDep = Annotated[str | None, Depends(get_request_id)]
