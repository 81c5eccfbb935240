"""The languages Herald speaks, and how a reader's locale falls back to one of them.

A user's locale is a BCP 47 tag (``pt-BR``), kept as they asked for it: a
catalogue added later serves them without a migration. What they are shown is
the first of its fallback chain that Herald has a catalogue for: ``pt-BR`` →
``pt`` → ``en``. The API stores the tag and carries it in queue messages; the
notifier (emails) and the API (pages) resolve it the same way, here.
"""

from __future__ import annotations

from typing import Annotated, Final

from babel import Locale, UnknownLocaleError
from pydantic import AfterValidator, StringConstraints

__all__ = ["DEFAULT_LOCALE", "LOCALES", "LocaleTag", "fallback_chain", "normalize", "resolve"]

DEFAULT_LOCALE: Final = "en"
"""The language of the source strings, and of every message from before locales."""

LOCALES: Final = ("en", "de", "es")
"""Every language with complete catalogues (emails and pages), ``DEFAULT_LOCALE`` first."""


def normalize(tag: str) -> str:
    """``tag`` as a canonical BCP 47 tag (``pt_br`` → ``pt-BR``, ``zh-hant-tw`` →
    ``zh-Hant-TW``); ``ValueError`` naming the rule if Babel (CLDR) knows no such
    locale."""
    try:
        locale = Locale.parse(tag.replace("_", "-"), sep="-")
    except (UnknownLocaleError, ValueError, TypeError):
        raise ValueError(
            "must be a language tag Herald knows, such as en, de, es or pt-BR"
        ) from None
    parts = [locale.language, locale.script, locale.territory, locale.variant]
    return "-".join(part for part in parts if part)


LocaleTag = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=2, max_length=35),
    AfterValidator(normalize),
]
"""A user's locale in a message or a request body: a known BCP 47 tag, normalized."""


def fallback_chain(tag: str) -> list[str]:
    """The tags to try for ``tag``, most specific first, ending with the default:
    ``pt-BR`` → ``["pt-BR", "pt", "en"]``."""
    parts = tag.split("-")
    chain = ["-".join(parts[:end]) for end in range(len(parts), 0, -1)]
    if DEFAULT_LOCALE not in chain:
        chain.append(DEFAULT_LOCALE)
    return chain


def resolve(tag: str | None) -> str:
    """The supported locale (one of ``LOCALES``) a reader of ``tag`` is shown."""
    if not tag:
        return DEFAULT_LOCALE
    for candidate in fallback_chain(tag):
        if candidate in LOCALES:
            return candidate
    return DEFAULT_LOCALE
