"""Who the caller is: the users table's credentials, password hashing and policy, access
tokens, rate limits, and logging in (``POST /api/v1/auth/token``).

Accounts build on it (``CurrentUserDep``, ``RateLimitsDep``, the hasher, the token
codec); auth imports no account code.
"""

from herald_api.auth.deps import (
    AuthDep,
    Caller,
    CallerDep,
    ClientLimits,
    CurrentUserDep,
    RateLimitsDep,
    SessionServiceDep,
)
from herald_api.auth.models import User
from herald_api.auth.runtime import Auth, open_auth

__all__ = [
    "Auth",
    "AuthDep",
    "Caller",
    "CallerDep",
    "ClientLimits",
    "CurrentUserDep",
    "RateLimitsDep",
    "SessionServiceDep",
    "User",
    "open_auth",
]
