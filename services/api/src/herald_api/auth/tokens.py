"""Access tokens: JWTs signed with HS256 under ``HERALD_JWT_SECRET``.

The API both issues and checks them, so a shared-key MAC is enough and no
public key has to be published. Decoding accepts HS256 only: a token naming
``none`` or an asymmetric algorithm (whose "public key" would be our secret)
is refused before its signature is looked at.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt
from fastapi import Response

from herald_api.auth.models import AccessToken
from herald_api.core.settings import Settings

ALGORITHM = "HS256"
ISSUER = "herald"
AUDIENCE = "herald-api"
"""Fixed: the API is the only issuer and the only audience; ``aud`` and ``iss``
still keep a JWT minted for anything else under the same key from passing here."""

LEEWAY = timedelta(seconds=5)
"""Clock skew tolerated on ``exp`` and ``iat`` between API processes."""

_REQUIRED_CLAIMS = ["exp", "iat", "sub", "aud", "iss", "jti", "ver"]


@dataclass(frozen=True)
class AccessClaims:
    """What a valid access token says: whose it is, and under which token version."""

    user_id: uuid.UUID
    version: int
    """The user's ``token_version`` when it was issued; a password change raises that,
    and a token of an older version is refused."""


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_in: int
    """Seconds the token is valid from when it was issued."""


class InvalidAccessTokenError(Exception):
    """The token is malformed, forged, expired, or not meant for this API."""


def issue_access_token(
    *, user_id: uuid.UUID, version: int, settings: Settings, now: datetime | None = None
) -> IssuedToken:
    issued_at = now or datetime.now(UTC)
    ttl = settings.access_token_ttl_seconds
    claims = {
        "sub": str(user_id),
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": issued_at,
        "exp": issued_at + timedelta(seconds=ttl),
        "jti": uuid.uuid4().hex,
        "ver": version,
    }
    token = jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm=ALGORITHM)
    return IssuedToken(token=token, expires_in=ttl)


def decode_access_token(token: str, *, settings: Settings) -> AccessClaims:
    """What a valid token says; ``InvalidAccessTokenError`` otherwise."""
    try:
        claims = jwt.decode(
            token,
            settings.jwt_secret.get_secret_value(),
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=ISSUER,
            leeway=LEEWAY,
            options={
                "require": _REQUIRED_CLAIMS,
                "strict_aud": True,
                "enforce_minimum_key_length": True,
            },
        )
        user_id = uuid.UUID(claims["sub"])
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        # Only the check that failed (ExpiredSignatureError, ...): pyjwt's messages
        # may quote parts of the token, and what is raised here may be logged.
        raise InvalidAccessTokenError(type(exc).__name__) from None
    version = claims["ver"]
    if type(version) is not int:  # bool is an int subclass: refuse true/false too
        raise InvalidAccessTokenError("InvalidVersionError")
    return AccessClaims(user_id=user_id, version=version)


def access_token_response(
    response: Response, *, claims: AccessClaims, settings: Settings
) -> AccessToken:
    """A fresh access token for ``claims``, with ``response`` made uncacheable."""
    issued = issue_access_token(user_id=claims.user_id, version=claims.version, settings=settings)
    # RFC 6749 5.1: a response carrying a token must not be cached.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return AccessToken(access_token=issued.token, expires_in=issued.expires_in)
