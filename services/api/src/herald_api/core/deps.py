"""FastAPI dependencies of every room, as ``Annotated`` aliases the routes declare.

Every dependency is ``async def``, even those that never await: FastAPI runs a
plain ``def`` dependency in its thread pool, and those hops cost about a tenth
of the API's CPU per signup (py-spy, make bench --profile).
"""

from __future__ import annotations

import secrets
from typing import Annotated

from asgi_correlation_id import correlation_id
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from herald_api.core.infrastructure import Infrastructure
from herald_api.core.settings import Settings
from herald_shared import internal_api

UNKNOWN_CLIENT = "unknown"
"""The client address of a request whose transport gave none (all such requests share it)."""


async def get_infrastructure(request: Request) -> Infrastructure:
    infrastructure: Infrastructure = request.app.state.infrastructure
    return infrastructure


InfrastructureDep = Annotated[Infrastructure, Depends(get_infrastructure)]


async def get_app_settings(infrastructure: InfrastructureDep) -> Settings:
    return infrastructure.settings


async def get_request_id() -> str | None:
    return correlation_id.get()


async def get_client_address(request: Request) -> str:
    """The client's IP address, as uvicorn determined it.

    Behind a reverse proxy that is the X-Forwarded-For address, but only when
    the proxy is one of ``HERALD_FORWARDED_ALLOW_IPS``; otherwise anyone could
    pick the address their attempts are counted against.
    """
    return request.client.host if request.client is not None else UNKNOWN_CLIENT


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
RequestIdDep = Annotated[str | None, Depends(get_request_id)]
ClientAddressDep = Annotated[str, Depends(get_client_address)]


_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="InternalToken",
    description="HERALD_INTERNAL_TOKEN of the API (the scheduler holds the same value).",
)


async def require_internal_token(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Let a request through only with ``Authorization: Bearer <HERALD_INTERNAL_TOKEN>``.

    Without a configured token the internal routes do not exist (404), so a
    deployment that never set one exposes nothing to guess at.
    """
    expected = settings.internal_token
    if expected is None:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail="Not Found")
    given = credentials.credentials if credentials is not None else ""
    if not secrets.compare_digest(given.encode(), expected.get_secret_value().encode()):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="A valid internal bearer token is required.",
            headers={"WWW-Authenticate": internal_api.SCHEME},
        )


InternalAuthDep = Annotated[None, Depends(require_internal_token)]
