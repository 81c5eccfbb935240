"""The message contract: round trips, versions, and malformed payloads."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from herald_shared.messages import (
    AccountExistsEmail,
    MessageError,
    VerificationEmail,
    WelcomeEmail,
)
from herald_testing.messages import verification_link


def welcome(**overrides: Any) -> WelcomeEmail:
    fields: dict[str, Any] = {
        "user_id": uuid.uuid4(),
        "email": "ada@example.com",
        "display_name": "Ada Lovelace",
        "request_id": "req-1",
        "verification": verification_link(),
        "locale": "de",
    }
    fields.update(overrides)
    return WelcomeEmail(**fields)


def test_round_trip_through_json_keeps_every_field() -> None:
    message = welcome(requested_at=datetime(2026, 11, 28, 7, 0, tzinfo=UTC))

    wire = json.loads(json.dumps(message.encode()))

    assert WelcomeEmail.decode(wire) == message
    assert wire["schema_version"] == 3
    assert set(wire) == {
        "schema_version",
        "message_id",
        "user_id",
        "email",
        "display_name",
        "requested_at",
        "request_id",
        "verification",
        "locale",
    }
    assert set(wire["verification"]) == {"token_id", "expires_at"}


def test_version_1_welcome_without_a_link_still_decodes() -> None:
    # Queued before email verification existed: still sent, without a link.
    wire = welcome().encode() | {"schema_version": 1}
    del wire["verification"], wire["locale"]

    decoded = WelcomeEmail.decode(wire)
    assert decoded.verification is None
    assert decoded.reader_locale == "en"


def test_version_2_welcome_from_before_locales_still_decodes_and_means_english() -> None:
    wire = welcome().encode() | {"schema_version": 2}
    del wire["locale"]

    decoded = WelcomeEmail.decode(wire)
    assert decoded.locale is None
    assert decoded.reader_locale == "en"


def test_version_3_welcome_needs_its_locale() -> None:
    wire = welcome().encode()
    del wire["locale"]

    with pytest.raises(MessageError, match="locale: required from schema_version 3"):
        WelcomeEmail.decode(wire)


def test_an_old_version_cannot_carry_a_locale() -> None:
    with pytest.raises(MessageError, match="locale: not part of schema_version 2"):
        WelcomeEmail.decode(welcome().encode() | {"schema_version": 2})


@pytest.mark.parametrize(
    ("given", "stored"), [("pt_br", "pt-BR"), ("DE", "de"), ("es-MX", "es-MX")]
)
def test_a_locale_is_carried_as_a_canonical_tag(given: str, stored: str) -> None:
    assert welcome(locale=given).locale == stored


@pytest.mark.parametrize("tag", ["xx-YY", "english", "de\nBcc"])
def test_a_locale_herald_does_not_know_is_refused(tag: str) -> None:
    with pytest.raises(MessageError, match="locale: Value error, must be a language tag"):
        WelcomeEmail.decode(welcome().encode() | {"locale": tag})


def test_version_2_welcome_needs_its_link() -> None:
    wire = welcome().encode() | {"schema_version": 2}
    del wire["verification"], wire["locale"]

    with pytest.raises(MessageError, match="verification: required from schema_version 2"):
        WelcomeEmail.decode(wire)


@pytest.mark.parametrize("token_id", ["short", "x" * 65, "has space" + "x" * 20, "a+b/" * 8])
def test_a_token_id_must_look_like_one(token_id: str) -> None:
    wire = welcome().encode()
    wire["verification"]["token_id"] = token_id

    with pytest.raises(MessageError, match=r"verification\.token_id"):
        WelcomeEmail.decode(wire)


def test_the_other_account_emails_round_trip() -> None:
    common: dict[str, Any] = {
        "user_id": uuid.uuid4(),
        "email": "ada@example.com",
        "display_name": "Ada",
        "locale": "es",
    }
    verification = VerificationEmail(**common, verification=verification_link(), reason="reminder")
    exists = AccountExistsEmail(**common)

    assert VerificationEmail.decode(json.loads(json.dumps(verification.encode()))) == verification
    assert AccountExistsEmail.decode(json.loads(json.dumps(exists.encode()))) == exists
    old = exists.encode() | {"schema_version": 1}
    del old["locale"]
    assert AccountExistsEmail.decode(old).reader_locale == "en"
    with pytest.raises(MessageError, match="reason"):
        VerificationEmail.decode(verification.encode() | {"reason": "because"})


def test_each_message_gets_its_own_id() -> None:
    assert welcome().message_id != welcome().message_id


def test_unknown_version_is_rejected_by_name() -> None:
    wire = welcome().encode() | {"schema_version": 4}

    with pytest.raises(MessageError) as caught:
        WelcomeEmail.decode(wire)

    assert str(caught.value) == (
        "invalid WelcomeEmail: schema_version: unsupported version 4 (supported: 1, 2, 3)"
    )


def test_missing_version_is_rejected() -> None:
    wire = welcome().encode()
    del wire["schema_version"]

    with pytest.raises(MessageError, match="schema_version: unsupported version None"):
        WelcomeEmail.decode(wire)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"email": "nope"}, "email"),
        ({"user_id": "12"}, "user_id"),
        ({"message_id": None}, "message_id"),
        ({"requested_at": "2026-11-28T07:00:00"}, "requested_at"),
        ({"display_name": "Eve\r\nBcc: x@example.com"}, "display_name"),
        ({"display_name": "=?utf-8?q?Ada=0D=0ABcc:_x=40example.com?="}, "display_name"),
        ({"password": "hunter22"}, "password"),
    ],
)
def test_malformed_payload_names_the_message_and_field(change: dict[str, Any], field: str) -> None:
    wire = welcome().encode() | change

    with pytest.raises(MessageError) as caught:
        WelcomeEmail.decode(wire)

    assert caught.value.message_type == "WelcomeEmail"
    assert [problem.split(":")[0] for problem in caught.value.problems] == [field]
    # The bad value itself never appears in the error (it may be a secret).
    assert "hunter22" not in str(caught.value)


def test_missing_field_is_named() -> None:
    wire = welcome().encode()
    del wire["user_id"]

    with pytest.raises(MessageError, match=r"user_id: Field required"):
        WelcomeEmail.decode(wire)


@pytest.mark.parametrize("payload", [None, "text", ["list"], 42])
def test_non_object_payload_is_rejected(payload: object) -> None:
    with pytest.raises(MessageError, match="payload must be an object"):
        WelcomeEmail.decode(payload)


def test_messages_are_immutable() -> None:
    message = welcome()

    with pytest.raises(ValueError, match="frozen"):
        message.email = "other@example.com"  # type: ignore[misc]
