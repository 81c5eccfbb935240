"""The account services, built once from the settings and the other rooms' parts."""

from __future__ import annotations

from dataclasses import dataclass

from herald_api.accounts.housekeeping import Housekeeping
from herald_api.accounts.idempotency import IdempotencyStore
from herald_api.accounts.links import LinkPolicy
from herald_api.accounts.service import AccountService
from herald_api.auth import Auth
from herald_api.core.infrastructure import Infrastructure
from herald_api.outbox import Outbox


@dataclass(frozen=True)
class Accounts:
    service: AccountService
    housekeeping: Housekeeping
    idempotency: IdempotencyStore


def build_accounts(infrastructure: Infrastructure, outbox: Outbox, auth: Auth) -> Accounts:
    """The services on the API's database, the outbox's fast path and auth's hasher."""
    policy = LinkPolicy.from_settings(infrastructure.settings)
    return Accounts(
        service=AccountService(
            sessions=infrastructure.sessions,
            dispatcher=outbox.dispatcher,
            hasher=auth.hasher,
            tokens=auth.tokens,
            links=policy,
            login_sessions=auth.login_sessions,
        ),
        housekeeping=Housekeeping(
            sessions=infrastructure.sessions, dispatcher=outbox.dispatcher, links=policy
        ),
        idempotency=IdempotencyStore.from_settings(
            infrastructure.sessions,
            jwt_secret=infrastructure.settings.jwt_secret,
            hours=infrastructure.settings.idempotency_key_hours,
            wait_seconds=infrastructure.settings.idempotency_wait_seconds,
        ),
    )
