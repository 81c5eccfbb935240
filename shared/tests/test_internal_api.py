"""The internal HTTP contract: one definition of what the scheduler sends and the API takes."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, SecretStr, ValidationError

from herald_shared import internal_api
from herald_shared.internal_api import (
    ENDPOINTS,
    MAX_AGE_SECONDS,
    InternalToken,
    OlderThan,
    Reconciled,
)


class TokenSettings(BaseModel):
    internal_token: InternalToken = None


def test_every_endpoint_lives_under_the_prefix_at_its_own_path() -> None:
    urls = [endpoint.url for endpoint in ENDPOINTS]

    assert urls == [
        "/internal/v1/outbox/reconcile",
        "/internal/v1/outbox/purge",
        "/internal/v1/users/remind-unverified",
        "/internal/v1/users/purge-unverified",
        "/internal/v1/tokens/purge",
        "/internal/v1/idempotency-keys/purge",
        "/internal/v1/sessions/purge",
    ]


@pytest.mark.parametrize("age", [60, 3600, MAX_AGE_SECONDS])
def test_accepts_an_age_from_a_minute_to_a_hundred_years(age: int) -> None:
    assert OlderThan(older_than_seconds=age).age.total_seconds() == age


@pytest.mark.parametrize("age", [59, 0, -1, MAX_AGE_SECONDS + 1])
def test_refuses_an_age_out_of_bounds(age: int) -> None:
    with pytest.raises(ValidationError, match="older_than_seconds"):
        OlderThan(older_than_seconds=age)


def test_the_token_travels_as_a_bearer_header() -> None:
    header = internal_api.authorization(SecretStr("s" * 16))

    assert header == {"Authorization": f"Bearer {'s' * 16}"}


@pytest.mark.parametrize("unset", [None, ""])
def test_an_empty_token_is_no_token(unset: str | None) -> None:
    assert TokenSettings(internal_token=unset).internal_token is None


def test_a_token_shorter_than_the_api_accepts_is_refused() -> None:
    with pytest.raises(ValidationError, match="internal_token") as refused:
        TokenSettings(internal_token="fifteen-chars-x")

    assert "at least 16" in str(refused.value)


def test_a_reconciliation_answer_is_read_whole() -> None:
    answer: dict[str, float] = {
        "delivered": 7,
        "skipped": 1,
        "dead": 1,
        "waiting": 2,
        "repushed": 3,
        "oldest_unsettled_seconds": 312.5,
    }

    assert Reconciled.model_validate(answer).model_dump() == answer
    del answer["repushed"]
    with pytest.raises(ValidationError, match="repushed"):
        Reconciled.model_validate(answer)
