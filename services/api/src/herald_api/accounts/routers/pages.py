"""The pages emailed links open: verify an address, choose a new password.

Links carry their token in the URL fragment (``/verify-email?lang=de#token=...``),
which browsers never send to a server: it stays out of request lines, access
logs and Referer headers. Each page's script reads it, drops it from the
address bar and keeps it in memory; only the person's press of the page's one
button sends it, so a mail scanner opening the link spends nothing. A
deployment with its own front end points HERALD_VERIFY_URL and
HERALD_RESET_URL (the notifier's) at pages of its own doing the same.

The language: the link's ``?lang=`` (the reader's locale, put there by the
notifier), else the browser's ``Accept-Language``, else English.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import HTMLResponse, Response

from herald_api.accounts.language import page_locale
from herald_api.accounts.link_pages import STYLESHEET_PATH, LinkPages, PageName

router = APIRouter(include_in_schema=False)


async def get_link_pages(request: Request) -> LinkPages:
    pages: LinkPages = request.app.state.link_pages
    return pages


LinkPagesDep = Annotated[LinkPages, Depends(get_link_pages)]
LangQuery = Annotated[str | None, Query()]
AcceptLanguageHeader = Annotated[str | None, Header()]


def _page(
    pages: LinkPages, name: PageName, *, lang: str | None, accept_language: str | None
) -> HTMLResponse:
    locale = page_locale(lang=lang, accept_language=accept_language)
    rendered = pages.page(name, locale)
    return HTMLResponse(rendered.body, headers=rendered.headers)


@router.get("/verify-email")
async def verify_email_page(
    pages: LinkPagesDep, lang: LangQuery = None, accept_language: AcceptLanguageHeader = None
) -> HTMLResponse:
    """The page behind a verification or email change link: one button that spends it."""
    return _page(pages, "verify-email", lang=lang, accept_language=accept_language)


@router.get("/reset-password")
async def reset_password_page(
    pages: LinkPagesDep, lang: LangQuery = None, accept_language: AcceptLanguageHeader = None
) -> HTMLResponse:
    """The page behind a password reset link: a form for the new password, which its
    script sends with the link's token."""
    return _page(pages, "reset-password", lang=lang, accept_language=accept_language)


@router.get(STYLESHEET_PATH)
async def stylesheet(pages: LinkPagesDep) -> Response:
    """The one stylesheet of both pages, in the brand's accent colour (cacheable)."""
    return Response(pages.css.body, media_type="text/css", headers=pages.css.headers)
