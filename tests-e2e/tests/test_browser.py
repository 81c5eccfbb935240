"""What people see, in a real browser: the emailed links' pages in Debian's Chromium.

Every page here is strict (``herald_testing.browser``): a console error, an
uncaught script error or a CSP violation on it fails the test, so "no console
errors and no CSP violations on any page" holds for every scenario. The pages'
hooks are fixed by the design: ``main[data-state]``, ``#confirm``, ``#status``
(``role=status``) on the verify page; ``#password``, ``#password-confirm``,
``#password-rules``, ``#password-error``, ``#password-confirm-error``,
``#submit`` on the reset page.

Each page state and each email's HTML is screenshot at desktop and phone size
into ``$HERALD_E2E_LOG_DIR/screenshots/`` (``verify-email.ready.desktop.png``,
``email.welcome.de.phone.png``); ``make screenshots`` also points
``HERALD_SCREENSHOTS_DIR`` at docs/screenshots/.
"""

from __future__ import annotations

import asyncio
import html
import os
import re
import secrets
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import httpx
import pytest
from playwright.async_api import BrowserContext, Page, expect

from herald_shared.locales import DEFAULT_LOCALE, LOCALES
from herald_testing.browser import PHONE, PageWatch, offline_page, save_screenshots
from herald_testing.maildev import MailDevClient
from herald_testing.signups import PASSWORD, REFRESH_GRACE_SECONDS, fresh_address, sign_up

EMAILED_LINK = re.compile(r"https?://\S+#token=[A-Za-z0-9_-]+")
NEW_PASSWORD = "a brand new passphrase"
VERIFY_API = "/api/v1/auth/verify"
RESET_API = "/api/v1/auth/password/reset"
VERIFY_STATES = (
    "ready",
    "verifying",
    "verified",
    "already-verified",
    "invalid",
    "taken",
    "error",
    "no-token",
)
RESET_STATES = ("ready", "saving", "done", "invalid", "error", "no-token")
CAN_LOG_IN = re.compile(r"log in", re.IGNORECASE)


class Mailbox:
    """One address's emails as they arrive, each handed out once."""

    def __init__(self, inbox: MailDevClient, address: str) -> None:
        self.inbox = inbox
        self.address = address
        self.seen: set[str] = set()

    async def next(self, *, within: float = 15.0) -> dict[str, Any]:
        """The oldest email to the address not handed out yet, waiting for it."""
        deadline = time.monotonic() + within
        while True:
            for message in await self.inbox.emails_to(self.address):
                if message["id"] not in self.seen:
                    self.seen.add(message["id"])
                    return message
            assert time.monotonic() < deadline, f"no new email to {self.address} in {within} s"
            await asyncio.sleep(0.1)


def emailed_link(message: dict[str, Any]) -> str:
    """The one link with a token in an email's text part; the HTML's button has it too."""
    links = {str(link) for link in EMAILED_LINK.findall(str(message["text"]))}
    assert len(links) == 1, f"expected one link in the text part, found {links}"
    [link] = links
    assert link in html.unescape(str(message["html"])), "the HTML part lacks the text's link"
    return reachable(link)


def reachable(link: str) -> str:
    """``link`` as this run's browser can open it: itself, but on the Swarm stack.

    There the API runs as replicas on host ports of their own
    (``HERALD_E2E_API_URLS``) and the emails link to the page origin the stack was
    given, which no host port publishes: the same path, query and fragment on
    the first replica.
    """
    if not os.environ.get("HERALD_E2E_API_URLS"):
        return link
    base = urlsplit(os.environ["HERALD_E2E_API_URL"])
    return urlunsplit(urlsplit(link)._replace(scheme=base.scheme, netloc=base.netloc))


def link_language(link: str) -> list[str]:
    """The ``lang`` the link asks its page for."""
    return parse_qs(urlsplit(link).query).get("lang", [])


async def log_in(api: httpx.AsyncClient, address: str, password: str) -> int:
    """The status of a login attempt (200 only once the address is verified)."""
    response = await api.post(
        "/api/v1/auth/token", data={"username": address, "password": password}
    )
    return response.status_code


async def state_of(page: Page, state: str) -> None:
    """Wait until the page's ``main`` is in ``state`` (one the design names)."""
    assert state in VERIFY_STATES + RESET_STATES, f"no page has a state {state!r}"
    await expect(page.locator("main")).to_have_attribute("data-state", state)


async def shoot(page: Page, name: str, locale: str = DEFAULT_LOCALE) -> None:
    """Screenshots of a page state; names carry the locale unless it is English."""
    await save_screenshots(page, name if locale == DEFAULT_LOCALE else f"{name}.{locale}")


async def shoot_email(
    browser_context: BrowserContext, message: dict[str, Any], kind: str, locale: str
) -> None:
    """Screenshots of an email's HTML as MailDev has it, remote content blocked; it fits
    a phone's width without sideways scrolling."""
    async with offline_page(browser_context) as page:
        await page.set_content(str(message["html"]), wait_until="load")
        await assert_fits_a_phone(page)
        await save_screenshots(page, f"email.{kind}.{locale}")


async def assert_fits_a_phone(page: Page) -> None:
    """At 390 px wide, nothing sticks out sideways (the layout is fluid)."""
    before = page.viewport_size
    await page.set_viewport_size(PHONE.size())
    try:
        width = await page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= PHONE.width, f"{width} px wide on a {PHONE.width} px phone"
    finally:
        if before is not None:
            await page.set_viewport_size(before)


async def focus_order(page: Page, *, presses: int = 12) -> list[str]:
    """The ids of the elements the Tab key visits from the top of the page, in order."""
    await page.evaluate("() => document.activeElement && document.activeElement.blur()")
    visited: list[str] = []
    for _ in range(presses):
        await page.keyboard.press("Tab")
        visited.append(await page.evaluate("() => document.activeElement.id"))
    return visited


async def open_fresh(page: Page, link: str) -> None:
    """Load ``link`` as a new document (not a jump to its fragment in the current one)."""
    await page.goto("about:blank")
    await page.goto(link)


async def test_the_welcome_link_verifies_only_with_the_click(
    api: httpx.AsyncClient, inbox: MailDevClient, page: Page, browser_context: BrowserContext
) -> None:
    address = await sign_up(api, display_name="Ada")
    welcome = await Mailbox(inbox, address).next()
    await shoot_email(browser_context, welcome, "welcome", "en")
    link = emailed_link(welcome)
    assert link_language(link) == ["en"]

    await page.goto(link)
    await state_of(page, "ready")
    assert "confirm" in await focus_order(page), "the button cannot be reached by keyboard"
    await shoot(page, "verify-email.ready")
    assert "token" not in page.url  # the address bar (and history) lost the token
    assert await log_in(api, address, PASSWORD) == 403  # opening it verified nothing

    await page.locator("#confirm").click()

    await state_of(page, "verified")
    status = page.locator("#status")
    await expect(status).to_have_attribute("role", "status")
    await expect(status).to_have_text(CAN_LOG_IN)
    await shoot(page, "verify-email.verified")
    assert await log_in(api, address, PASSWORD) == 200


async def test_the_same_link_again_says_already_verified(
    api: httpx.AsyncClient, inbox: MailDevClient, page: Page
) -> None:
    address = await sign_up(api)
    link = emailed_link(await Mailbox(inbox, address).next())
    await page.goto(link)
    await page.locator("#confirm").click()
    await state_of(page, "verified")

    await open_fresh(page, link)
    await state_of(page, "ready")
    await page.locator("#confirm").click()

    await state_of(page, "already-verified")
    await expect(page.locator("#status")).to_have_text(re.compile(r"already", re.IGNORECASE))
    await expect(page.locator("#status")).to_have_text(CAN_LOG_IN)
    await shoot(page, "verify-email.already-verified")
    assert await log_in(api, address, PASSWORD) == 200


async def test_a_scanner_opening_the_link_spends_nothing(
    api: httpx.AsyncClient, inbox: MailDevClient, page: Page
) -> None:
    address = await sign_up(api)
    link = emailed_link(await Mailbox(inbox, address).next())
    sent: list[str] = []
    page.on("request", lambda request: sent.append(f"{request.method} {request.url}"))

    # What a mail scanner that runs scripts does: open the link, wait, leave.
    await page.goto(link)
    await state_of(page, "ready")
    await page.wait_for_load_state("networkidle")
    await page.wait_for_timeout(1000)

    assert not [request for request in sent if request.startswith("POST")], sent
    assert await log_in(api, address, PASSWORD) == 403
    # The person clicking later still gets their address verified.
    await open_fresh(page, link)
    await page.locator("#confirm").click()
    await state_of(page, "verified")
    assert await log_in(api, address, PASSWORD) == 200


async def test_a_forgotten_password_is_replaced_through_the_form(
    api: httpx.AsyncClient,
    inbox: MailDevClient,
    page_watch: PageWatch,
    browser_context: BrowserContext,
) -> None:
    page = page_watch.page
    address = await sign_up(api)
    mailbox = Mailbox(inbox, address)
    await mailbox.next()  # the welcome email
    assert (
        await api.post("/api/v1/auth/password/forgot", json={"email": address})
    ).status_code == 202
    reset_email = await mailbox.next()
    await shoot_email(browser_context, reset_email, "password_reset", "en")

    await page.goto(emailed_link(reset_email))
    await state_of(page, "ready")
    password, confirmation = page.locator("#password"), page.locator("#password-confirm")
    for field in (password, confirmation):
        await expect(field).to_have_attribute("type", "password")
        assert await field.evaluate("field => field.labels.length") >= 1, "a field has no label"
    rules = page.locator("#password-rules")
    await expect(rules).to_be_visible()  # stated before the first submit
    await expect(password).to_have_attribute("aria-describedby", re.compile(r"password-rules"))
    tabbed = [id_ for id_ in await focus_order(page) if id_]
    fields = ["password", "password-confirm", "submit"]
    assert [id_ for id_ in tabbed if id_ in fields][:3] == fields, tabbed
    await password.focus()
    await shoot(page, "reset-password.ready")

    # Two different entries are refused on the page, before anything is sent.
    await password.fill(NEW_PASSWORD)
    await confirmation.fill(NEW_PASSWORD + " typo")
    await page.locator("#submit").click()
    await expect(page.locator("#password-confirm-error")).to_be_visible()
    await expect(page.locator("#password-confirm-error")).not_to_be_empty()
    await state_of(page, "ready")

    # A password the API refuses: its 422 message shows at the field.
    page_watch.allow_failed_response(path=RESET_API, status=422)
    await password.fill("short")
    await confirmation.fill("short")
    await page.locator("#submit").click()
    error = page.locator("#password-error")
    await expect(error).to_be_visible()
    # The rule it broke, in the page's words (the API's error type picks the text).
    await expect(error).to_have_text("Use at least 8 characters.")
    await expect(password).to_have_attribute("aria-invalid", "true")
    await expect(password).to_have_attribute("aria-describedby", re.compile(r"password-error"))
    await shoot(page, "reset-password.refused")

    await password.fill(NEW_PASSWORD)
    await confirmation.fill(NEW_PASSWORD)
    await page.locator("#submit").click()

    await state_of(page, "done")
    await expect(page.locator("#status")).to_have_text(CAN_LOG_IN)
    await shoot(page, "reset-password.done")
    assert await log_in(api, address, NEW_PASSWORD) == 200
    assert await log_in(api, address, PASSWORD) == 401
    await shoot_email(browser_context, await mailbox.next(), "password_changed", "en")


async def test_a_german_account_gets_german_emails_and_pages(
    api: httpx.AsyncClient, inbox: MailDevClient, page: Page, browser_context: BrowserContext
) -> None:
    address = await sign_up(api, display_name="Käthe", locale="de")
    mailbox = Mailbox(inbox, address)
    welcome = await mailbox.next()
    assert "Willkommen" in welcome["subject"], welcome["subject"]
    await shoot_email(browser_context, welcome, "welcome", "de")
    link = emailed_link(welcome)
    assert link_language(link) == ["de"]

    await page.goto(link)

    await state_of(page, "ready")
    await expect(page.locator("html")).to_have_attribute("lang", "de")
    await expect(page.locator("#confirm")).to_have_text(re.compile(r"bestätigen", re.IGNORECASE))
    await shoot(page, "verify-email.ready", "de")
    await page.locator("#confirm").click()
    await state_of(page, "verified")
    await expect(page.locator("#status")).not_to_have_text(CAN_LOG_IN)  # not the English text
    await shoot(page, "verify-email.verified", "de")
    # A refresh token replayed past the grace window: the reuse email is German too.
    login = await api.post("/api/v1/auth/token", data={"username": address, "password": PASSWORD})
    replaced = {"refresh_token": login.json()["refresh_token"]}
    assert (await api.post("/api/v1/auth/refresh", json=replaced)).status_code == 200
    await asyncio.sleep(REFRESH_GRACE_SECONDS + 1)
    assert (await api.post("/api/v1/auth/refresh", json=replaced)).status_code == 401
    notice = await mailbox.next()
    assert notice["subject"] == "Eine Herald-Sitzung wurde zu deiner Sicherheit abgemeldet"
    await shoot_email(browser_context, notice, "session_reuse", "de")


async def test_a_changed_language_holds_for_the_next_email_and_its_page(
    api: httpx.AsyncClient, inbox: MailDevClient, page: Page, browser_context: BrowserContext
) -> None:
    address = await sign_up(api)
    mailbox = Mailbox(inbox, address)
    token = urlsplit(emailed_link(await mailbox.next())).fragment.removeprefix("token=")
    assert (await api.post(VERIFY_API, json={"token": token})).status_code == 200
    login = await api.post("/api/v1/auth/token", data={"username": address, "password": PASSWORD})
    changed = await api.patch(
        "/api/v1/users/me",
        json={"locale": "es"},
        headers={"Authorization": f"Bearer {login.json()['access_token']}"},
    )
    assert changed.status_code == 200
    assert changed.json()["locale"] == "es"

    forgot = await api.post("/api/v1/auth/password/forgot", json={"email": address})
    assert forgot.status_code == 202
    reset_email = await mailbox.next()
    await shoot_email(browser_context, reset_email, "password_reset", "es")
    link = emailed_link(reset_email)
    assert link_language(link) == ["es"]
    await page.goto(link)

    await state_of(page, "ready")
    await expect(page.locator("html")).to_have_attribute("lang", "es")
    await expect(page.locator("#submit")).to_have_text(re.compile(r"contraseña", re.IGNORECASE))
    await shoot(page, "reset-password.ready", "es")


async def test_the_browser_language_chooses_the_page_language(page: Page, api_url: str) -> None:
    await page.set_extra_http_headers({"Accept-Language": "es-MX,es;q=0.9,en;q=0.5"})

    await page.goto(f"{api_url}/verify-email")

    await expect(page.locator("html")).to_have_attribute("lang", "es")
    await state_of(page, "no-token")


async def test_email_change_links_confirm_once_then_say_already_confirmed(
    api: httpx.AsyncClient, inbox: MailDevClient, page: Page, browser_context: BrowserContext
) -> None:
    address = await sign_up(api)
    old_mailbox = Mailbox(inbox, address)
    welcome_link = emailed_link(await old_mailbox.next())
    token = urlsplit(welcome_link).fragment.removeprefix("token=")
    assert (await api.post(VERIFY_API, json={"token": token})).status_code == 200
    login = await api.post("/api/v1/auth/token", data={"username": address, "password": PASSWORD})
    new_address = fresh_address()
    asked = await api.post(
        "/api/v1/users/me/email",
        json={"password": PASSWORD, "new_email": new_address},
        headers={"Authorization": f"Bearer {login.json()['access_token']}"},
    )
    assert asked.status_code == 202
    change = await Mailbox(inbox, new_address).next()
    await shoot_email(browser_context, change, "email_change", "en")
    link = emailed_link(change)

    await page.goto(link)
    await state_of(page, "ready")
    await page.locator("#confirm").click()
    await state_of(page, "verified")
    await open_fresh(page, link)
    await page.locator("#confirm").click()

    await state_of(page, "already-verified")
    assert await log_in(api, new_address, PASSWORD) == 200
    await shoot_email(browser_context, await old_mailbox.next(), "email_changed", "en")


async def test_the_other_emails_look_right_too(
    api: httpx.AsyncClient, inbox: MailDevClient, browser_context: BrowserContext
) -> None:
    """The emails no page scenario above needs: a fresh link, a second signup's warning."""
    address = await sign_up(api)
    mailbox = Mailbox(inbox, address)
    await mailbox.next()  # the welcome email
    resent = await api.post("/api/v1/auth/verify/resend", json={"email": address})
    assert resent.status_code == 202
    verification = await mailbox.next()
    assert link_language(emailed_link(verification)) == ["en"]
    await shoot_email(browser_context, verification, "verification", "en")
    again = await api.post(
        "/api/v1/users", json={"email": address, "password": PASSWORD, "display_name": "Again"}
    )
    assert again.status_code == 202
    await shoot_email(browser_context, await mailbox.next(), "account_exists", "en")


@pytest.mark.parametrize("locale", LOCALES)
async def test_the_verify_page_in_each_state_is_styled_under_its_csp(
    page_watch: PageWatch, api_url: str, locale: str
) -> None:
    page = page_watch.page
    await assert_page_is_served_right(page, f"{api_url}/verify-email?lang={locale}", locale)
    await state_of(page, "no-token")
    await shoot(page, "verify-email.no-token", locale)

    page_watch.allow_failed_response(path=VERIFY_API, status=400)
    await open_fresh(page, f"{api_url}/verify-email?lang={locale}#token={unknown_token()}")
    await state_of(page, "ready")
    await page.locator("#confirm").click()

    await state_of(page, "invalid")
    await expect(page.locator("#status")).not_to_be_empty()
    await shoot(page, "verify-email.invalid", locale)


@pytest.mark.parametrize("locale", LOCALES)
async def test_the_reset_page_in_each_state_is_styled_under_its_csp(
    page_watch: PageWatch, api_url: str, locale: str
) -> None:
    page = page_watch.page
    await assert_page_is_served_right(page, f"{api_url}/reset-password?lang={locale}", locale)
    await state_of(page, "no-token")
    await shoot(page, "reset-password.no-token", locale)

    page_watch.allow_failed_response(path=RESET_API, status=400)
    await open_fresh(page, f"{api_url}/reset-password?lang={locale}#token={unknown_token()}")
    await state_of(page, "ready")
    await page.locator("#password").fill(NEW_PASSWORD)
    await page.locator("#password-confirm").fill(NEW_PASSWORD)
    await page.locator("#submit").click()

    await state_of(page, "invalid")
    await expect(page.locator("#status")).not_to_be_empty()
    await shoot(page, "reset-password.invalid", locale)


def unknown_token() -> str:
    """A token of the right shape that no link ever carried."""
    return secrets.token_urlsafe(32)


async def assert_page_is_served_right(page: Page, url: str, locale: str) -> None:
    """Open ``url``: its CSP allows only its own script and the API's stylesheet, which
    loaded and styles it; ``lang`` and a phone viewport are declared."""
    response = await page.goto(url)
    assert response is not None
    assert response.status == 200
    csp = response.headers.get("content-security-policy", "")
    for directive in ("default-src 'none'", "style-src 'self'", "script-src 'sha256-"):
        assert directive in csp, f"{directive!r} not in the page's CSP: {csp!r}"
    await expect(page.locator("html")).to_have_attribute("lang", locale)
    await expect(page.locator('meta[name="viewport"]')).to_have_attribute(
        "content", re.compile(r"width=device-width")
    )
    sheets = await page.evaluate(
        "() => [...document.styleSheets].map("
        "sheet => [new URL(sheet.href || location.href).pathname, sheet.cssRules.length])"
    )
    assert any(path == "/pages/herald.css" and rules > 0 for path, rules in sheets), sheets
    assert await page.locator("[style]").count() == 0  # the CSP would block inline styles
    await assert_fits_a_phone(page)


COOKIE_MODE = """async ([address, password]) => {
    const login = await fetch("/api/v1/auth/token?refresh_token_in=cookie", {
        method: "POST", body: new URLSearchParams({username: address, password}),
    });
    const loginKeys = Object.keys(await login.json());
    const cookies = document.cookie;
    const refreshed = await fetch("/api/v1/auth/refresh", {
        method: "POST", headers: {"X-Herald-CSRF": "1"},
    });
    const refreshedBody = await refreshed.json();
    const withoutHeader = await fetch("/api/v1/auth/refresh", {method: "POST"});
    const me = await fetch("/api/v1/users/me", {
        headers: {Authorization: `Bearer ${refreshedBody.access_token}`},
    });
    const logout = await fetch("/api/v1/auth/logout", {
        method: "POST", headers: {Authorization: `Bearer ${refreshedBody.access_token}`},
    });
    const afterLogout = await fetch("/api/v1/auth/refresh", {
        method: "POST", headers: {"X-Herald-CSRF": "1"},
    });
    return {
        login: login.status, loginKeys, cookies,
        refreshed: refreshed.status, refreshedKeys: Object.keys(refreshedBody),
        withoutHeader: withoutHeader.status, me: me.status,
        logout: logout.status, afterLogout: afterLogout.status,
    };
}"""
"""A browser app in cookie mode, as a script of the API's own origin runs it."""


async def test_a_browser_app_keeps_its_refresh_token_where_scripts_cannot_read_it(
    api: httpx.AsyncClient, inbox: MailDevClient, page: Page, page_watch: PageWatch, api_url: str
) -> None:
    address = await sign_up(api)
    token = re.search(
        r"#token=([A-Za-z0-9_-]+)", emailed_link(await Mailbox(inbox, address).next())
    )
    assert token is not None
    assert (await api.post(VERIFY_API, json={"token": token[1]})).status_code == 200
    await page.goto(reachable(f"{api_url}/verify-email"))  # any page of the API's origin
    for status in (401, 403):  # provoked below, on purpose
        page_watch.allow_failed_response(path="/api/v1/auth/refresh", status=status)

    seen = await page.evaluate(COOKIE_MODE, [address, PASSWORD])

    assert seen["login"] == 200
    assert "refresh_token" not in seen["loginKeys"]
    assert "herald_refresh" not in seen["cookies"]  # HttpOnly: no script reads it
    # The browser sent the cookie by itself (Secure, SameSite=Strict, its path) ...
    assert (seen["refreshed"], seen["me"]) == (200, 200)
    assert "refresh_token" not in seen["refreshedKeys"]
    # ... but not without the CSRF header, and never after logout.
    assert seen["withoutHeader"] == 403
    assert (seen["logout"], seen["afterLogout"]) == (204, 401)
