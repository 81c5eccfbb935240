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
from pydantic import SecretStr

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
    session_id: uuid.UUID | None = None
    """The session (claim ``sid``) it was issued in: ending that session refuses it.
    None only for a token issued before sessions existed, accepted on its version
    alone until it expires (15 min after the upgrade at most)."""


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_in: int
    """Seconds the token is valid from when it was issued."""


class InvalidAccessTokenError(Exception):
    """The token is malformed, forged, expired, or not meant for this API."""


class AccessTokens:
    """Issues and checks access tokens under one key and lifetime, built once from settings."""

    def __init__(self, *, secret: SecretStr, ttl_seconds: int) -> None:
        self._secret = secret
        self.ttl_seconds = ttl_seconds

    @classmethod
    def from_settings(cls, settings: Settings) -> AccessTokens:
        """``HERALD_JWT_SECRET`` and ``HERALD_ACCESS_TOKEN_TTL_SECONDS``."""
        return cls(secret=settings.jwt_secret, ttl_seconds=settings.access_token_ttl_seconds)

    def issue(self, claims: AccessClaims, *, now: datetime | None = None) -> IssuedToken:
        """A token saying ``claims``, valid for ``ttl_seconds`` from ``now``."""
        issued_at = now or datetime.now(UTC)
        payload = {
            "sub": str(claims.user_id),
            "iss": ISSUER,
            "aud": AUDIENCE,
            "iat": issued_at,
            "exp": issued_at + timedelta(seconds=self.ttl_seconds),
            "jti": uuid.uuid4().hex,
            "ver": claims.version,
        }
        if claims.session_id is not None:
            payload["sid"] = str(claims.session_id)
        token = jwt.encode(payload, self._secret.get_secret_value(), algorithm=ALGORITHM)
        return IssuedToken(token=token, expires_in=self.ttl_seconds)

    def decode(self, token: str) -> AccessClaims:
        """What a valid token says; ``InvalidAccessTokenError`` otherwise."""
        try:
            claims = jwt.decode(
                token,
                self._secret.get_secret_value(),
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
            sid = claims.get("sid")
            session_id = None if sid is None else uuid.UUID(sid)
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            # Only the check that failed (ExpiredSignatureError, ...): pyjwt's messages
            # may quote parts of the token, and what is raised here may be logged.
            raise InvalidAccessTokenError(type(exc).__name__) from None
        version = claims["ver"]
        if type(version) is not int:  # bool is an int subclass: refuse true/false too
            raise InvalidAccessTokenError("InvalidVersionError")
        return AccessClaims(user_id=user_id, version=version, session_id=session_id)
