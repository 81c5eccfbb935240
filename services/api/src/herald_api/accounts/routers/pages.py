"""The pages emailed links open: verify an address, choose a new password.

Links carry their token in the URL fragment (``/verify-email#token=...``),
which browsers never send to a server: it stays out of request lines, access
logs and Referer headers. Each page's script reads it, drops it from the
address bar, and POSTs it to the API. A deployment with its own front end
points HERALD_VERIFY_URL and HERALD_RESET_URL (the notifier's) at pages of its
own doing the same.
"""

from __future__ import annotations

import base64
import hashlib
from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(include_in_schema=False)


def _page(name: str) -> tuple[str, dict[str, str]]:
    """The HTML of ``pages/<name>.html`` with its script inlined, and its headers."""
    folder = files("herald_api.accounts") / "pages"
    script = (folder / f"{name}.js").read_text(encoding="utf-8")
    html = (folder / f"{name}.html").read_text(encoding="utf-8").replace("SCRIPT", script)
    script_hash = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode()
    headers = {
        # Only the page's own script runs, and it may talk to this origin only.
        "Content-Security-Policy": (
            f"default-src 'none'; script-src 'sha256-{script_hash}'; connect-src 'self'; "
            "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        ),
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
    }
    return html, headers


_VERIFY_EMAIL = _page("verify-email")
_RESET_PASSWORD = _page("reset-password")


@router.get("/verify-email")
async def verify_email_page() -> HTMLResponse:
    """The page behind a verification link; it verifies nothing until its script runs."""
    html, headers = _VERIFY_EMAIL
    return HTMLResponse(html, headers=headers)


@router.get("/reset-password")
async def reset_password_page() -> HTMLResponse:
    """The page behind a password reset link: a form for the new password, which its
    script sends with the link's token."""
    html, headers = _RESET_PASSWORD
    return HTMLResponse(html, headers=headers)
