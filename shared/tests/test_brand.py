"""The brand variables: defaults, and a clear error for each bad value."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from herald_shared.brand import DEFAULT_ACCENT, BrandSettings


def test_defaults_name_herald_in_its_blue(monkeypatch: pytest.MonkeyPatch) -> None:
    brand = BrandSettings(_env_file=None).brand
    assert (brand.name, brand.accent, brand.support_email, brand.logo_url) == (
        "Herald",
        DEFAULT_ACCENT,
        None,
        None,
    )


def test_variables_set_the_brand(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERALD_BRAND_NAME", " Acme ")
    monkeypatch.setenv("HERALD_BRAND_SUPPORT_EMAIL", "help@acme.example")
    monkeypatch.setenv("HERALD_BRAND_ACCENT", "#AA3300")
    monkeypatch.setenv("HERALD_BRAND_LOGO_URL", "https://acme.example/logo.png")
    brand = BrandSettings(_env_file=None).brand
    assert brand.name == "Acme"
    assert brand.support_email == "help@acme.example"
    assert brand.accent == "#aa3300"
    assert brand.logo_url == "https://acme.example/logo.png"


@pytest.mark.parametrize(
    ("variable", "value", "field"),
    [
        ("HERALD_BRAND_ACCENT", "blue", "brand_accent"),
        ("HERALD_BRAND_ACCENT", "#12345", "brand_accent"),
        ("HERALD_BRAND_LOGO_URL", "http://acme.example/logo.png", "brand_logo_url"),
        ("HERALD_BRAND_SUPPORT_EMAIL", "not an address", "brand_support_email"),
        ("HERALD_BRAND_NAME", "<script>", "brand_name"),
        ("HERALD_BRAND_NAME", "", "brand_name"),
    ],
)
def test_a_bad_value_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, field: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as caught:
        BrandSettings(_env_file=None)
    assert [error["loc"] for error in caught.value.errors()] == [(field,)]
