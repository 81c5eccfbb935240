"""The reader's language from an HTTP request: the ``Accept-Language`` header, read
the same way by signup (which stores a tag) and the link pages (which show a locale)."""

from __future__ import annotations

from babel import negotiate_locale

from herald_shared.locales import DEFAULT_LOCALE, LOCALES, normalize, resolve

__all__ = ["page_locale", "preferred_tags", "signup_locale"]

_MAX_TAG_LENGTH = 35
"""The longest tag looked at (a ``LocaleTag``'s limit)."""
_MAX_ENTRIES = 20
"""Entries of one header looked at: a header of thousands must not cost thousands of parses."""


def preferred_tags(accept_language: str | None) -> list[str]:
    """The language tags of an ``Accept-Language`` header, the most wanted first.

    Entries keep their order among equal weights; ``*``, ``q=0`` and malformed
    weights are dropped. The tags are as sent (not checked against Babel).
    """
    if not accept_language:
        return []
    weighted: list[tuple[float, int, str]] = []
    for position, entry in enumerate(accept_language.split(",")[:_MAX_ENTRIES]):
        tag, _, parameters = entry.strip().partition(";")
        tag = tag.strip()
        weight = 1.0
        for parameter in parameters.split(";"):
            name, _, value = parameter.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        if tag and tag != "*" and 0 < weight <= 1:
            weighted.append((-weight, position, tag))
    return [tag for _, _, tag in sorted(weighted)]


def signup_locale(accept_language: str | None) -> str:
    """The tag stored for a signup without a ``locale``: the header's most wanted entry
    Babel knows, normalized (``pt-br`` → ``pt-BR``, kept even though Herald shows it in
    English today), else ``en``."""
    for tag in preferred_tags(accept_language):
        try:
            return normalize(tag)
        except ValueError:
            continue
    return DEFAULT_LOCALE


def page_locale(*, lang: str | None, accept_language: str | None) -> str:
    """The locale (one of ``LOCALES``) a link page is shown in: the link's ``?lang=``,
    else the best match of ``Accept-Language`` (``de-AT`` → ``de``), else ``en``."""
    if lang and len(lang) <= _MAX_TAG_LENGTH:
        try:
            return resolve(normalize(lang))
        except ValueError:
            pass
    negotiated = negotiate_locale(preferred_tags(accept_language), LOCALES, sep="-")
    return resolve(negotiated)
