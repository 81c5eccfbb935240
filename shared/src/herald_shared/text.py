"""Value types whose rules both sides of a queue must agree on."""

from __future__ import annotations

import unicodedata
from typing import Annotated

from pydantic import AfterValidator, StringConstraints


def _printable(value: str) -> str:
    # Control and format characters (CR, LF, NUL, bidi overrides...) must never
    # reach an email header or a log line.
    for char in value:
        if unicodedata.category(char) in {"Cc", "Cf", "Zl", "Zp"}:
            raise ValueError("must not contain control characters or line breaks")
    return value


DisplayName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
    AfterValidator(_printable),
]
"""A person's display name: 1..100 printable characters, trimmed."""
