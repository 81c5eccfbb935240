"""What a new password must be beyond 8 to 128 characters: not one of the most common.

OWASP ASVS 5.0 (6.2.4) asks that a new password not be among the 3,000 most
common ones that the policy would otherwise accept; ``data/common-passwords.txt``
holds them (its header and ``data/README.md`` say where they come from).
"""

from __future__ import annotations

import unicodedata
from functools import cache
from importlib import resources

COMMON_PASSWORDS_FILE = "common-passwords.txt"


def comparable(password: str) -> str:
    """The form both sides are compared in: "PassWord1" matches "password1", full-width too."""
    # NFKC again after casefold: folding can produce sequences NFKC would compose.
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", password).casefold())


@cache
def common_passwords() -> frozenset[str]:
    text = (resources.files("herald_api") / "data" / COMMON_PASSWORDS_FILE).read_text("utf-8")
    return frozenset(
        comparable(line) for line in text.splitlines() if line and not line.startswith("#")
    )


def is_common(password: str) -> bool:
    return comparable(password) in common_passwords()
