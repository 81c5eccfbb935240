"""Value types whose rules both sides of a queue must agree on."""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, StringConstraints

__all__ = ["ENCODED_WORD", "USER_AGENT_LENGTH", "DisplayName", "UserAgent", "as_printable"]


def _printable(value: str) -> str:
    # Control and format characters (CR, LF, NUL, bidi overrides...) must never
    # reach an email header or a log line; nor may a lone surrogate (Cs), which
    # JSON can carry (\ud800) but UTF-8, PostgreSQL and SMTP cannot.
    for char in value:
        category = unicodedata.category(char)
        if category == "Cs":
            raise ValueError("must not contain lone surrogate characters")
        if category in {"Cc", "Cf", "Zl", "Zp"}:
            raise ValueError("must not contain control characters or line breaks")
    if ENCODED_WORD.search(value):
        # Python's email package decodes RFC 2047 encoded words while folding a
        # header (CVE-2024-6923 on unpatched Pythons): "=?utf-8?q?=0D=0A...?="
        # is printable yet can become a line break in the header written.
        raise ValueError("must not contain RFC 2047 encoded words (=?...?=)")
    return value


ENCODED_WORD = re.compile(r"=\?[^?]*\?[^?]*\?[^?]*\?=")
"""An RFC 2047 encoded word (``=?charset?encoding?text?=``), leniently matched."""


DisplayName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
    AfterValidator(_printable),
]
"""A person's display name: 1..100 printable characters, trimmed."""


USER_AGENT_LENGTH = 256
"""How much of a client's ``User-Agent`` Herald keeps."""


def as_printable(value: str, *, max_length: int = USER_AGENT_LENGTH) -> str:
    """``value`` with every control, format or surrogate character made a space, runs
    of whitespace made one, trimmed and cut to ``max_length``: text a client sent
    that is shown back to a person (a session's browser), never refused for it."""
    kept = "".join(
        " " if unicodedata.category(char) in {"Cc", "Cf", "Cs", "Zl", "Zp"} else char
        for char in value
    )
    return " ".join(kept.split())[:max_length]


def _as_printable(value: object) -> object:
    return as_printable(value) if isinstance(value, str) else value


UserAgent = Annotated[
    str, BeforeValidator(_as_printable), StringConstraints(max_length=USER_AGENT_LENGTH)
]
"""A client's ``User-Agent``, made printable and cut to ``USER_AGENT_LENGTH``."""
