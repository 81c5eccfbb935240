"""The API's HTTP metrics, served apart from the API (``HERALD_METRICS_PORT``); each
domain declares its own beside its code (``outbox.metrics``, ``auth.ratelimit``, ...).

Requests are labelled by route template (``/api/v1/users/{user_id}``), never
by raw path, so one label value stands for every user id and a scan of random
URLs cannot grow the series without bound.
"""

from __future__ import annotations

from collections.abc import Iterable

from fastapi.routing import RouteContext, iter_route_contexts
from prometheus_client import Counter, Histogram
from starlette.routing import BaseRoute
from starlette.types import Scope

UNMATCHED = "<unmatched>"
"""The route label of a request no route matched (a 404 from the router)."""

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""Method labels kept as sent; any other method is counted as ``OTHER``."""

HTTP_REQUESTS = Counter(
    "herald_api_http_requests_total",
    "HTTP requests answered, by method, route template and status code.",
    ["method", "route", "status"],
)
HTTP_REQUEST_SECONDS = Histogram(
    "herald_api_http_request_duration_seconds",
    "Time from receiving a request to the end of its response, by method and route template.",
    ["method", "route"],
)


class RequestMetrics:
    """Counts and times HTTP requests by method, route template and status.

    Fed by ``RequestLogMiddleware``, which already captures each request's
    status and duration for its log line.
    """

    def __init__(self) -> None:
        self._templates: dict[int, list[RouteContext]] | None = None

    def observe(self, scope: Scope, *, status_code: int, seconds: float) -> None:
        method = scope["method"] if scope["method"] in METHODS else "OTHER"
        route = self.route_template(scope)
        HTTP_REQUESTS.labels(method, route, str(status_code)).inc()
        HTTP_REQUEST_SECONDS.labels(method, route).observe(seconds)

    def route_template(self, scope: Scope) -> str:
        """The path format of the route that handled ``scope``, or ``UNMATCHED``."""
        route = scope.get("route")
        if route is None:
            return UNMATCHED
        if isinstance(route, RouteContext):
            return route.path_format or UNMATCHED
        # Since FastAPI 0.137 scope["route"] is the route as declared in its
        # router, without the prefixes include_router() added: look up the
        # full path among the app's route contexts.
        if self._templates is None:
            self._templates = _contexts_by_route(scope["app"].routes)
        contexts = self._templates.get(id(route), [])
        for context in contexts:
            if len(contexts) == 1 or _matches_path(context, scope["path"]):
                return context.path_format or UNMATCHED
        return getattr(route, "path_format", None) or UNMATCHED


def _contexts_by_route(routes: Iterable[BaseRoute]) -> dict[int, list[RouteContext]]:
    contexts: dict[int, list[RouteContext]] = {}
    for context in iter_route_contexts(list(routes)):
        contexts.setdefault(id(context.original_route), []).append(context)
    return contexts


def _matches_path(context: RouteContext, path: str) -> bool:
    # A route included under several prefixes: the prefix the request used decides.
    regex = getattr(context, "path_regex", None)
    return regex is not None and regex.match(path) is not None
