"""The notifier's gettext catalogues are complete: the committed template is
what the code and templates say today, and every language translates all of it."""

from __future__ import annotations

from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.frontend import CommandLineInterface
from babel.messages.pofile import read_po

from herald_notifier.render import LOCALE_DIR
from herald_shared.locales import DEFAULT_LOCALE, LOCALES

SERVICE = Path(__file__).resolve().parents[1]
TRANSLATED = [locale for locale in LOCALES if locale != DEFAULT_LOCALE]


def read(path: Path, locale: str | None = None) -> Catalog:
    with path.open("rb") as source:
        return read_po(source, locale=locale)


def messages(catalog: Catalog) -> dict[str, frozenset[str]]:
    """Every message id of ``catalog`` with its flags (python-format...), header left out."""
    return {
        str(message.id): frozenset(message.flags - {"fuzzy"}) for message in catalog if message.id
    }


@pytest.fixture(scope="module")
def template() -> Catalog:
    return read(LOCALE_DIR / "messages.pot")


def test_the_committed_template_is_what_a_fresh_extraction_finds(
    tmp_path_factory: pytest.TempPathFactory, template: Catalog
) -> None:
    fresh = tmp_path_factory.mktemp("i18n") / "messages.pot"

    # The same command as `make i18n` (paths relative to the service).
    CommandLineInterface().run(  # type: ignore[no-untyped-call]
        [
            "pybabel",
            "-q",
            "extract",
            "-F",
            str(SERVICE / "babel.cfg"),
            "-o",
            str(fresh),
            "--no-location",
            "--sort-output",
            str(SERVICE / "src"),
        ]
    )

    extracted = messages(read(fresh))
    assert len(extracted) > 40  # subjects and every template's texts
    assert messages(template) == extracted, "run `make i18n` and translate what it adds"


@pytest.mark.parametrize("locale", TRANSLATED)
def test_every_message_is_translated_with_the_same_placeholders(
    template: Catalog, locale: str
) -> None:
    catalog = read(LOCALE_DIR / locale / "LC_MESSAGES" / "messages.po", locale=locale)

    assert set(messages(catalog)) == set(messages(template))
    untranslated = [message.id for message in catalog if message.id and not message.string]
    fuzzy = [message.id for message in catalog if message.id and message.fuzzy]
    assert untranslated == []
    assert fuzzy == []
    assert not catalog.fuzzy
    # Babel's checkers: python-format placeholders of msgstr match the msgid's.
    problems = [(message.id, [str(e) for e in errors]) for message, errors in catalog.check()]
    assert problems == []
    # No translation is the English left in place (the product name aside).
    same = [m.id for m in catalog if m.id and m.string == m.id and "%(" not in str(m.id)]
    assert same == []
