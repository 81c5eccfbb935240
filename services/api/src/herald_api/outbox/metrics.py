"""The outbox's Prometheus metrics: fast-path pushes, the relay, the reconciliation."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from herald_shared.tasks import TASKS

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
for _task in TASKS.values():
    # Export 0 before the first message, so rate() and alerts see the series at once.
    MESSAGES_ENQUEUED.labels(_task.message.__name__)
    MESSAGES_ENQUEUE_FAILED.labels(_task.message.__name__)
    OUTBOX_RELAYED.labels(_task.message.__name__)
for _reason in RELAY_ERROR_REASONS:
    OUTBOX_RELAY_ERRORS.labels(_reason)
for _outcome in RECONCILE_OUTCOMES:
    OUTBOX_RECONCILED.labels(_outcome)
