"""The link pages' catalogues are complete: the committed .pot is what the templates
hold today, every locale translates every message of it (no fuzzy, no empty, the same
placeholders), and the compiled catalogues the app loads are current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.pofile import read_po

from herald_api.accounts.link_pages import translations
from herald_shared.locales import DEFAULT_LOCALE, LOCALES

SERVICE = Path(__file__).resolve().parents[1]
LOCALE_DIR = SERVICE / "src" / "herald_api" / "accounts" / "locales"
TEMPLATE = LOCALE_DIR / "messages.pot"
TRANSLATED = [locale for locale in LOCALES if locale != DEFAULT_LOCALE]


def read(path: Path, locale: str | None = None) -> Catalog:
    with path.open("rb") as file:
        return read_po(file, locale=locale)


def ids(catalog: Catalog) -> set[str]:
    return {str(message.id) for message in catalog if message.id}


def test_the_committed_template_is_current(tmp_path: Path) -> None:
    """``make i18n`` was run after the last change of a page's text."""
    fresh = tmp_path / "messages.pot"
    pybabel = Path(sys.executable).with_name("pybabel")
    subprocess.run(
        [
            str(pybabel),
            "extract",
            "-F",
            "babel.cfg",
            "-o",
            str(fresh),
            "--add-location=file",
            "src",
        ],
        cwd=SERVICE,
        check=True,
        capture_output=True,
    )

    assert ids(read(fresh)) == ids(read(TEMPLATE))
    assert len(ids(read(TEMPLATE))) > 20


@pytest.mark.parametrize("locale", TRANSLATED)
def test_every_message_is_translated(locale: str) -> None:
    catalog = read(LOCALE_DIR / locale / "LC_MESSAGES" / "messages.po", locale)
    template = read(TEMPLATE)

    assert ids(catalog) >= ids(template), "run make i18n: messages missing from the .po"
    untranslated = [m.id for m in catalog if m.id in ids(template) and not m.string]
    fuzzy = [m.id for m in catalog if m.id and m.fuzzy]
    problems = [(message.id, errors) for message, errors in catalog.check()]
    assert untranslated == []
    assert fuzzy == []
    assert problems == []  # placeholders (%(product)s ...) the same as the source's
    obsolete = list(catalog.obsolete)
    assert obsolete == []


@pytest.mark.parametrize("locale", TRANSLATED)
def test_the_compiled_catalogue_is_loaded_and_current(locale: str) -> None:
    """The .mo the build compiled is found, and says what the .po says (a stale one
    means the package was not rebuilt: ``uv sync``)."""
    catalog = read(LOCALE_DIR / locale / "LC_MESSAGES" / "messages.po", locale)
    loaded = translations(locale)

    for message in catalog:
        if message.id:
            assert loaded.gettext(str(message.id)) == message.string
