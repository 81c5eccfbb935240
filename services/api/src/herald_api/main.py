"""The FastAPI application and its composition root: the lifespan opens each room's parts
(core, outbox, auth, accounts) in order and puts them on ``app.state``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from asgi_correlation_id import CorrelationIdMiddleware
from fastapi import APIRouter, FastAPI

from herald_api.accounts import build_accounts
from herald_api.accounts import http as accounts_http
from herald_api.accounts.link_pages import LinkPages
from herald_api.accounts.routers import account, pages, password, users, verification
from herald_api.accounts.routers import internal as accounts_internal
from herald_api.auth import http as auth_http
from herald_api.auth import internal as auth_internal
from herald_api.auth import open_auth, session_routes
from herald_api.auth import router as login
from herald_api.core import errors, health
from herald_api.core.infrastructure import open_infrastructure
from herald_api.core.requestlog import RequestLogMiddleware
from herald_api.core.settings import Settings, get_settings
from herald_api.outbox import open_outbox
from herald_api.outbox import router as outbox_internal
from herald_shared.metrics import serve_metrics

api_router = APIRouter(prefix="/api/v1")
api_router.include_router(login.router)
api_router.include_router(session_routes.router)
# Before users: no "/users/{...}" route added there can then shadow "/users/me".
api_router.include_router(account.router)
api_router.include_router(users.router)
api_router.include_router(verification.router)
api_router.include_router(password.router)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        serve_metrics(settings.metrics_host, settings.metrics_port)
        async with AsyncExitStack() as stack:
            infrastructure = await stack.enter_async_context(open_infrastructure(settings))
            outbox = await stack.enter_async_context(open_outbox(infrastructure))
            auth = await stack.enter_async_context(open_auth(infrastructure, outbox))
            app.state.infrastructure = infrastructure
            app.state.outbox = outbox
            app.state.auth = auth
            app.state.accounts = build_accounts(infrastructure, outbox, auth)
            yield

    app = FastAPI(
        title="Herald", version="0.1.0", lifespan=lifespan, max_body_size=errors.MAX_BODY_BYTES
    )
    app.include_router(api_router)
    if settings.internal_token is not None:
        # Without a token the internal routes do not exist at all: 404, not 401.
        app.include_router(outbox_internal.router)
        app.include_router(auth_internal.router)
        app.include_router(accounts_internal.router)
    app.include_router(health.router)
    # Every page in every language, built once: a request only picks one.
    app.state.link_pages = LinkPages.build(settings.brand)
    app.include_router(pages.router)
    errors.install(app)
    auth_http.install(app)
    accounts_http.install(app)
    # Added last = outermost: the id exists before the request is logged.
    app.add_middleware(RequestLogMiddleware)
    app.add_middleware(CorrelationIdMiddleware, header_name="X-Request-ID")
    return app
