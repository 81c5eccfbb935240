"""Tokens of emailed links: derived where needed, never carried.

The API issues a link token by drawing a token id (128 bits from the OS's
CSPRNG) and storing only the SHA-256 ``fingerprint`` of the token ``derive``
makes of it; the notifier derives the same token from the id in its queue
message to build the link. So no token (nor its hash) ever travels through
the outbox, Redis or a log line: the id alone is useless without
``HERALD_LINK_SECRET``, which only the API and the notifier hold.

A token is bound to its purpose (it is part of the HMAC input, and the API
looks tokens up by purpose as well), so a token made for one kind of link
can never be spent on another.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Annotated, Literal

from pydantic import SecretStr, StringConstraints

__all__ = [
    "TOKEN_ID_BYTES",
    "Purpose",
    "TokenId",
    "derive",
    "fingerprint",
    "new_token_id",
]

Purpose = Literal["verify_email", "reset_password", "change_email"]
"""What a link token may be spent on."""

TOKEN_ID_BYTES = 16
"""128 bits: the entropy of every token (ASVS 7.2.3 asks for at least 128)."""

TokenId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{22,64}$")]
"""A token id as it travels in a queue message (URL-safe base64, >= 128 bits)."""


def new_token_id() -> str:
    """A fresh token id from the OS's CSPRNG."""
    return secrets.token_urlsafe(TOKEN_ID_BYTES)


def derive(secret: SecretStr, *, token_id: str, purpose: Purpose) -> str:
    """The link token of ``token_id`` for ``purpose``: HMAC-SHA256 under ``secret``."""
    mac = hmac.new(
        secret.get_secret_value().encode("utf-8"),
        b"herald-link-token/v1\x00" + purpose.encode() + b"\x00" + token_id.encode(),
        hashlib.sha256,
    ).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


def fingerprint(token: str) -> str:
    """What the API stores and looks a token up by: its SHA-256, hex.

    A fast hash is right here: the token has 256 bits of entropy, so nobody
    can search for the preimage of a stolen fingerprint.
    """
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
