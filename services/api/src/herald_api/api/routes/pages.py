"""The page an email verification link opens.

Links carry their token in the URL fragment (``/verify-email#token=...``),
which browsers never send to a server: it stays out of request lines, access
logs and Referer headers. This page reads it and POSTs it to
``/api/v1/auth/verify``. A deployment with its own front end points
HERALD_VERIFY_URL (the notifier's) at a page of its own doing the same.
"""

from __future__ import annotations

import base64
import hashlib
from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(include_in_schema=False)

_SCRIPT = (files("herald_api") / "pages" / "verify-email.js").read_text(encoding="utf-8")
_PAGE = (
    (files("herald_api") / "pages" / "verify-email.html")
    .read_text(encoding="utf-8")
    .replace("SCRIPT", _SCRIPT)
)
_SCRIPT_HASH = base64.b64encode(hashlib.sha256(_SCRIPT.encode("utf-8")).digest()).decode()

HEADERS = {
    # Only this page's own script runs, and it may talk to this origin only.
    "Content-Security-Policy": (
        f"default-src 'none'; script-src 'sha256-{_SCRIPT_HASH}'; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


@router.get("/verify-email")
async def verify_email_page() -> HTMLResponse:
    """The page behind a verification link; it verifies nothing until its script runs."""
    return HTMLResponse(_PAGE, headers=HEADERS)
