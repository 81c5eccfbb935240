"""New passwords: 8 to 128 characters, and not one of the 3,000 most common (ASVS 6.2.4)."""

from __future__ import annotations

from importlib import resources

import httpx
import pytest
from pydantic import ValidationError

from herald_api.accounts.schemas import UserCreate
from herald_api.auth.password_policy import (
    COMMON_PASSWORDS_FILE,
    common_passwords,
    comparable,
    is_common,
)


def fullwidth(text: str) -> str:
    """``text`` in full-width forms (ASCII letters and digits only), as NFKC folds them back."""
    return "".join(chr(ord(c) + 0xFEE0) for c in text)


def _listed_lines() -> list[str]:
    text = (resources.files("herald_api") / "data" / COMMON_PASSWORDS_FILE).read_text("utf-8")
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_the_list_has_exactly_3000_distinct_passwords_the_policy_would_otherwise_accept() -> None:
    lines = _listed_lines()

    assert len(lines) == 3000
    assert len(set(lines)) == 3000
    assert all(8 <= len(line) <= 128 for line in lines)
    # Stored as compared, so the loaded set is the file itself.
    assert all(comparable(line) == line for line in lines)
    assert common_passwords() == frozenset(lines)
    # Rank order: the most common one that is long enough comes first.
    assert lines[:3] == ["password", "12345678", "123456789"]


@pytest.mark.parametrize(
    "password",
    [
        "password",
        "PassWord",
        "BASEBALL",
        fullwidth("sunshine"),
        fullwidth("Password"),
        "1qaz2wsx",
    ],
)
def test_common_passwords_are_recognised_in_any_case_and_width(password: str) -> None:
    assert is_common(password)


@pytest.mark.parametrize(
    "password",
    [
        "correct horse battery staple",
        "password but longer and mine",
        "123456",  # common, but too short to be in a list of what the policy accepts
        "pässwörd-ñ-日本語",
    ],
)
def test_other_passwords_are_not_common(password: str) -> None:
    assert not is_common(password)


def test_a_common_password_fails_validation_with_its_own_error() -> None:
    with pytest.raises(ValidationError) as caught:
        UserCreate.model_validate(
            {"email": "ada@example.com", "password": "Sunshine", "display_name": "Ada"}
        )

    [error] = caught.value.errors()
    assert error["loc"] == ("password",)
    assert error["type"] == "password_too_common"
    assert error["msg"].startswith("is too common")
    assert "Sunshine" not in error["msg"]


def test_an_uncommon_unicode_password_is_accepted() -> None:
    user = UserCreate.model_validate(
        {"email": "ada@example.com", "password": "pässwörd-ñ-日本語", "display_name": "Ada"}
    )

    assert user.password.get_secret_value() == "pässwörd-ñ-日本語"


@pytest.mark.parametrize("password", ["iloveyou", "Football", fullwidth("password")])
async def test_signup_with_a_common_password_gets_422_naming_the_password(
    client: httpx.AsyncClient, password: str
) -> None:
    response = await client.post(
        "/api/v1/users",
        json={"email": "ada@example.com", "password": password, "display_name": "Ada"},
    )

    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "password"]
    assert error["type"] == "password_too_common"
    assert error["msg"].startswith("is too common")
    assert password not in response.text
