"""The API's Prometheus metrics, served apart from the API (``HERALD_METRICS_PORT``).

Requests are labelled by route template (``/api/v1/users/{user_id}``), never
by raw path, so one label value stands for every user id and a scan of random
URLs cannot grow the series without bound.
"""

from __future__ import annotations

from collections.abc import Iterable

from fastapi.routing import RouteContext, iter_route_contexts
from prometheus_client import (
    Counter,
    Gauge,
    Histogram,
)
from starlette.routing import BaseRoute
from starlette.types import Scope

from herald_shared.tasks import TASKS

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
SIGNUPS = Counter(
    "herald_api_signups_total",
    "Signups committed, by outcome: created (a new account) or address_taken (the owner "
    "was emailed instead).",
    ["outcome"],
)
MESSAGES_ENQUEUED = Counter(
    "herald_api_messages_enqueued_total",
    "Queue messages the request itself handed to Redis right after their transaction "
    "committed (the outbox fast path), by message type.",
    ["message_type"],
)
MESSAGES_ENQUEUE_FAILED = Counter(
    "herald_api_messages_enqueue_failed_total",
    "Queue messages Redis did not take in time on the fast path (logged as "
    "message.enqueue_failed; the outbox relay retries them), by message type.",
    ["message_type"],
)
OUTBOX_PENDING = Gauge(
    "herald_api_outbox_pending",
    "Outbox messages not yet relayed to Redis, as the relay last counted them "
    "(every replica counts the same table: aggregate with max, not sum).",
)
OUTBOX_RELAYED = Counter(
    "herald_api_outbox_relayed_total",
    "Outbox messages the relay pushed to Redis and marked relayed, by message type.",
    ["message_type"],
)
RELAY_ERROR_REASONS = ("redis", "database", "rejected", "other")
OUTBOX_RELAY_ERRORS = Counter(
    "herald_api_outbox_relay_errors_total",
    "Outbox relay failures, by reason: redis (a push failed; the batch is retried after a "
    "backoff), database (a pass failed), rejected (a row that can never be pushed was set "
    "aside; see outbox.message_rejected), other (a bug).",
    ["reason"],
)
RECONCILE_OUTCOMES = ("delivered", "skipped", "dead", "waiting", "repushed")
OUTBOX_RECONCILED = Counter(
    "herald_api_outbox_reconciled_total",
    "Outbox rows the reconciliation checked in Redis, by outcome: delivered, skipped "
    "(completed unsent, e.g. its link had expired) and dead (a dead letter; logged as "
    "outbox.settled_dead) settle the row; waiting (its job will still run) checks it again "
    "later; repushed (Redis had lost it, or its job was stranded; logged as outbox.repushed "
    "with the message_id) pushed it again.",
    ["outcome"],
)
OUTBOX_OLDEST_UNSETTLED = Gauge(
    "herald_api_outbox_oldest_unsettled_seconds",
    "Age of the oldest outbox row whose delivery is not confirmed yet (pending or relayed, "
    "not settled), as the relay or the reconciliation last measured it; 0 when none. Rows "
    "are settled by the reconciliation a few minutes after their push, so alert well above "
    "that (e.g. > 1 h). Every replica reads the same table: aggregate with max.",
)
RATE_LIMITED = Counter(
    "herald_api_rate_limited_total",
    "Attempts refused with 429 by a rate limit (logged as rate_limit.exceeded), by action "
    "(signup, login, resend) and by the scope of the limit that refused (client, email).",
    ["action", "scope"],
)
RATE_LIMIT_FAIL_OPEN = Counter(
    "herald_api_rate_limit_fail_open_total",
    "Attempts let through without a rate-limit check, by action and reason: timeout or "
    "redis (the check failed; logged as rate_limit.unavailable), paused (skipped for a "
    "second after such a failure), other (a bug). Any increase means limits are off.",
    ["action", "reason"],
)

for _task in TASKS.values():
    # Export 0 before the first message, so rate() and alerts see the series at once.
    MESSAGES_ENQUEUED.labels(_task.message.__name__)
    MESSAGES_ENQUEUE_FAILED.labels(_task.message.__name__)
    OUTBOX_RELAYED.labels(_task.message.__name__)
for _reason in RELAY_ERROR_REASONS:
    OUTBOX_RELAY_ERRORS.labels(_reason)
for _outcome in RECONCILE_OUTCOMES:
    OUTBOX_RECONCILED.labels(_outcome)


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
