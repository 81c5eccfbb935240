"""Cookie mode: the refresh token in an ``HttpOnly`` cookie instead of the JSON body, for
browser apps (a script, an XSS included, can never read it).

A login (or a password change) asks for it with ``?refresh_token_in=cookie``; the
answer then carries the access token only, and sets ``herald_refresh``:
``HttpOnly; Secure; SameSite=Strict; Path=/api/v1/auth/refresh``, so the browser
sends it to the refresh route alone. A refresh that comes with the cookie and no
body answers the same way, with the next cookie.

A browser adds cookies to requests other sites make, so a refresh by cookie must
prove it comes from a script of Herald's own origin (CSRF, OWASP's "custom request
header" and "Fetch Metadata" defences, on top of ``SameSite=Strict``): it must carry
``X-Herald-CSRF: 1``, which no form can send and which a script of another origin
cannot send without a CORS preflight that Herald never grants; and a browser's
``Sec-Fetch-Site``, when sent, must be ``same-origin`` (or ``none``, typed by the
user). Otherwise: 403, and the token is not touched.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import HTTPException, Query, Response, status

REFRESH_COOKIE = "herald_refresh"
REFRESH_COOKIE_PATH = "/api/v1/auth/refresh"
CSRF_HEADER = "X-Herald-CSRF"
CSRF_VALUE = "1"
TRUSTED_FETCH_SITES = frozenset({"same-origin", "none"})

RefreshTokenIn = Literal["body", "cookie"]
"""Where an answer puts the refresh token."""

RefreshTokenInQuery = Annotated[
    RefreshTokenIn,
    Query(
        alias="refresh_token_in",
        description="Where the answer puts the refresh token: `body` (the JSON, for apps "
        "that keep it themselves), or `cookie` (an HttpOnly, Secure, SameSite=Strict "
        f"cookie `{REFRESH_COOKIE}` sent to `{REFRESH_COOKIE_PATH}` only: for browser apps).",
    ),
]
"""``?refresh_token_in=`` of the routes that start a session (default ``body``)."""

CSRF_REFUSED = (
    f"A refresh by cookie must come from this site's own scripts, with the header "
    f"{CSRF_HEADER}: {CSRF_VALUE}."
)

CSRF_RESPONSES: dict[int | str, dict[str, Any]] = {
    status.HTTP_403_FORBIDDEN: {
        "description": f"{CSRF_REFUSED} Answered to a refresh by cookie without that "
        "header, or sent by another site (Sec-Fetch-Site); the token is not touched."
    }
}


def set_refresh_cookie(response: Response, token: str, *, max_age: int) -> None:
    """Put ``token`` in the refresh cookie of ``response``, for ``max_age`` seconds."""
    response.set_cookie(
        REFRESH_COOKIE,
        token,
        max_age=max_age,
        path=REFRESH_COOKIE_PATH,
        secure=True,
        httponly=True,
        samesite="strict",
    )


def cleared_refresh_cookie() -> str:
    """The ``Set-Cookie`` value that deletes the refresh cookie."""
    response = Response()
    response.delete_cookie(
        REFRESH_COOKIE, path=REFRESH_COOKIE_PATH, secure=True, httponly=True, samesite="strict"
    )
    return response.headers["set-cookie"]


def require_same_origin(*, csrf: str | None, fetch_site: str | None) -> None:
    """403 unless a refresh by cookie shows it comes from Herald's own origin."""
    if csrf != CSRF_VALUE or (fetch_site is not None and fetch_site not in TRUSTED_FETCH_SITES):
        raise HTTPException(status_code=status.HTTP_403_FORBIDDEN, detail=CSRF_REFUSED)
