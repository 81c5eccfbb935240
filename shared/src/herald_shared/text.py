"""Value types whose rules both sides of a queue must agree on."""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated

from pydantic import AfterValidator, StringConstraints

__all__ = ["ENCODED_WORD", "DisplayName"]


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
