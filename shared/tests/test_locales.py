"""A reader's locale falls back to a language Herald has catalogues for."""

from __future__ import annotations

import pytest

from herald_shared.locales import LOCALES, fallback_chain, normalize, resolve


@pytest.mark.parametrize(
    ("tag", "chain"),
    [
        ("pt-BR", ["pt-BR", "pt", "en"]),
        ("de", ["de", "en"]),
        ("en-GB", ["en-GB", "en"]),
        ("zh-Hant-TW", ["zh-Hant-TW", "zh-Hant", "zh", "en"]),
    ],
)
def test_the_fallback_chain_goes_from_specific_to_english(tag: str, chain: list[str]) -> None:
    assert fallback_chain(tag) == chain


@pytest.mark.parametrize(
    ("tag", "shown"),
    [("pt-BR", "en"), ("de-AT", "de"), ("es-MX", "es"), ("es", "es"), (None, "en"), ("fr", "en")],
)
def test_a_reader_is_shown_the_first_supported_locale_of_the_chain(
    tag: str | None, shown: str
) -> None:
    assert resolve(tag) == shown


def test_english_comes_first_among_the_supported_locales() -> None:
    assert LOCALES[0] == "en"
    assert {"de", "es"} <= set(LOCALES)


@pytest.mark.parametrize(("given", "canonical"), [("PT_br", "pt-BR"), ("zh-hant-tw", "zh-Hant-TW")])
def test_tags_are_normalized(given: str, canonical: str) -> None:
    assert normalize(given) == canonical


@pytest.mark.parametrize("tag", ["xx", "klingon", "", "de--", "12"])
def test_unknown_tags_are_refused_with_the_rule(tag: str) -> None:
    with pytest.raises(ValueError, match="must be a language tag Herald knows"):
        normalize(tag)
