"""The pages emailed links open: they read the token from the URL fragment only, send
it only when the person acts, speak the reader's language, and run nothing but their
own script and stylesheet."""

from __future__ import annotations

import base64
import hashlib
import re
from html.parser import HTMLParser

import httpx
import pytest
from pydantic import HttpUrl

from herald_api.core.settings import Settings
from herald_shared.brand import DEFAULT_ACCENT
from herald_shared.locales import LOCALES
from herald_testing.clients import OpenClient

PAGES = ("/verify-email", "/reset-password")
STATES = {
    "/verify-email": [
        "verifying",
        "verified",
        "already-verified",
        "invalid",
        "taken",
        "error",
        "no-token",
    ],
    "/reset-password": ["saving", "done", "invalid", "error", "no-token"],
}
"""Every state but ``ready`` shows a text at #status, which the HTML must hold."""


VOID = {"meta", "link", "input", "img", "br", "hr"}


class Elements(HTMLParser):
    """Every start tag of a page with its attributes, and the text inside each id'd
    element and each ``data-message``/``data-text`` element."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.texts: dict[str, str] = {}
        self._open: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        if tag in VOID:
            return
        name = None
        for key in ("id", "data-message", "data-text"):
            if attributes.get(key):
                name = f"{key}:{attributes[key]}"
                self.texts.setdefault(name, "")
        self._open.append((tag, name))

    def handle_data(self, data: str) -> None:
        for _, name in self._open:
            if name is not None:
                self.texts[name] += data

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            if self._open.pop()[0] == tag:
                break

    def by_id(self, element_id: str) -> tuple[str, dict[str, str | None]]:
        [found] = [(tag, attrs) for tag, attrs in self.tags if attrs.get("id") == element_id]
        return found


def parse(html: str) -> Elements:
    parser = Elements()
    parser.feed(html)
    parser.close()
    return parser


def html_lang(html: str) -> str:
    match = re.search(r'<html lang="([^"]+)"', html)
    assert match is not None
    return match.group(1)


@pytest.mark.parametrize(
    ("page", "posts_to"),
    [("/verify-email", "/api/v1/auth/verify"), ("/reset-password", "/api/v1/auth/password/reset")],
)
async def test_a_link_page_reads_the_token_from_the_fragment_only(
    client: httpx.AsyncClient, page: str, posts_to: str
) -> None:
    response = await client.get(page)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy
    assert "script-src 'sha256-" in policy
    assert "form-action 'none'" in policy
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Cache-Control"] == "no-store"
    assert "location.hash" in response.text
    assert "history.replaceState" in response.text
    assert posts_to in response.text


async def test_the_reset_page_asks_for_a_new_password_twice(client: httpx.AsyncClient) -> None:
    page = parse((await client.get("/reset-password")).text)

    for field in ("password", "password-confirm"):
        tag, attrs = page.by_id(field)
        assert (tag, attrs["type"], attrs["autocomplete"]) == ("input", "password", "new-password")
        labels = [a for t, a in page.tags if t == "label" and a.get("for") == field]
        assert len(labels) == 1, f"#{field} has no label"
    _, password = page.by_id("password")
    assert password["aria-describedby"] == "password-rules password-error"
    _, confirmation = page.by_id("password-confirm")
    assert confirmation["aria-describedby"] == "password-confirm-error"
    # The rules are visible before anything is sent; the errors are empty until then.
    assert "8 to 128 characters" in page.texts["id:password-rules"]
    assert page.texts["id:password-error"] == page.texts["id:password-confirm-error"] == ""
    assert page.by_id("submit")[0] == "button"
    assert page.texts["id:submit"] == "Set new password"
    # Too long a password must reach the API's rule, not be cut silently by the browser.
    assert "maxlength" not in password


async def test_the_verify_page_waits_for_a_press_of_its_one_button(
    client: httpx.AsyncClient,
) -> None:
    html = (await client.get("/verify-email")).text
    page = parse(html)

    tag, button = page.by_id("confirm")
    assert (tag, button["type"]) == ("button", "button")
    assert page.texts["id:confirm"] == "Confirm my address"
    _, status = page.by_id("status")
    assert status["role"] == "status"
    # The script's only fetch is inside the button's click handler.
    [script] = re.findall(r"<script>(.*?)</script>", html, flags=re.S)
    assert script.count("fetch(") == 1
    assert script.index('addEventListener("click"') < script.index("fetch(")


@pytest.mark.parametrize("page", PAGES)
async def test_every_page_holds_the_text_of_every_state(
    client: httpx.AsyncClient, page: str
) -> None:
    """The script only switches state: every text it shows is in the HTML, translated."""
    for locale in LOCALES:
        html = (await client.get(page, params={"lang": locale})).text
        parsed = parse(html)

        main = [attrs for tag, attrs in parsed.tags if tag == "main"]
        assert [attrs.get("data-state") for attrs in main] == ["ready"]
        for state in STATES[page]:
            assert parsed.texts.get(f"data-message:{state}", "").strip(), (locale, state)
            assert f'"{state}"' in html  # the script names the state


@pytest.mark.parametrize(
    ("query", "accept_language", "locale", "title"),
    [
        ({}, None, "en", "Confirm your email address"),
        ({"lang": "de"}, None, "de", "Bestätige deine E-Mail-Adresse"),
        ({"lang": "es"}, "de-DE,de;q=0.9", "es", "Confirma tu dirección de correo electrónico"),
        ({}, "de-AT,en;q=0.5", "de", "Bestätige deine E-Mail-Adresse"),
        ({}, "fr-CH, es;q=0.8, de;q=0.5", "es", "Confirma tu dirección de correo electrónico"),
        ({"lang": "de-CH"}, None, "de", "Bestätige deine E-Mail-Adresse"),
        ({"lang": "pt-BR"}, "de", "en", "Confirm your email address"),  # pt-BR → pt → en
        ({"lang": "not a tag"}, "es", "es", "Confirma tu dirección de correo electrónico"),
        ({}, "fr, *;q=0.1", "en", "Confirm your email address"),
    ],
)
async def test_the_page_speaks_the_links_language_else_the_browsers(
    client: httpx.AsyncClient,
    query: dict[str, str],
    accept_language: str | None,
    locale: str,
    title: str,
) -> None:
    headers = {} if accept_language is None else {"Accept-Language": accept_language}

    response = await client.get("/verify-email", params=query, headers=headers)

    assert response.status_code == 200
    assert html_lang(response.text) == locale
    assert response.headers["Content-Language"] == locale
    assert "Accept-Language" in response.headers["Vary"]
    assert f"<title>{title} · Herald</title>" in response.text
    assert f"<h1>{title}</h1>" in response.text


async def test_the_reset_page_is_translated(client: httpx.AsyncClient) -> None:
    german = parse((await client.get("/reset-password", params={"lang": "de"})).text)
    spanish = parse((await client.get("/reset-password", params={"lang": "es"})).text)

    assert german.texts["id:submit"] == "Neues Passwort festlegen"
    assert spanish.texts["id:submit"] == "Establecer contraseña nueva"
    assert "128" in german.texts["id:password-rules"]
    assert german.texts["data-text:mismatch"].startswith("Die beiden Passwörter")


@pytest.mark.parametrize("page", PAGES)
async def test_no_inline_style_and_nothing_from_elsewhere(
    client: httpx.AsyncClient, page: str
) -> None:
    """The CSP forbids inline styles: the page must need none to look right."""
    html = (await client.get(page)).text
    parsed = parse(html)

    assert "<style" not in html
    assert not [tag for tag, attrs in parsed.tags if "style" in attrs]
    assert not [tag for tag, attrs in parsed.tags if any(k.startswith("on") for k in attrs)]
    scripts = [attrs for tag, attrs in parsed.tags if tag == "script"]
    assert scripts == [{}]  # one inline script, no src
    [stylesheet] = [attrs for tag, attrs in parsed.tags if tag == "link"]
    assert stylesheet["rel"] == "stylesheet"
    assert str(stylesheet["href"]).startswith("/pages/herald.css")
    assert 'name="viewport" content="width=device-width, initial-scale=1"' in html


async def test_each_page_allows_exactly_its_own_script(client: httpx.AsyncClient) -> None:
    """The hash in the CSP is the inline script's: a changed script without a changed
    hash would be blocked by every browser."""
    for page in PAGES:
        for locale in LOCALES:
            response = await client.get(page, params={"lang": locale})
            [script] = re.findall(r"<script>(.*?)</script>", response.text, flags=re.S)
            digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
            assert response.headers["Content-Security-Policy"] == (
                f"default-src 'none'; script-src 'sha256-{digest}'; style-src 'self'; "
                "img-src 'none'; connect-src 'self'; base-uri 'none'; form-action 'none'; "
                "frame-ancestors 'none'"
            )


async def test_the_stylesheet_is_served_cacheable_in_the_brands_accent(
    client: httpx.AsyncClient,
) -> None:
    html = (await client.get("/verify-email")).text
    [href] = re.findall(r'<link rel="stylesheet" href="([^"]+)">', html)

    response = await client.get(href)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/css")
    assert "public" in response.headers["Cache-Control"]
    assert "max-age=" in response.headers["Cache-Control"]
    assert f"--accent: {DEFAULT_ACCENT};" in response.text
    assert ":focus-visible" in response.text
    assert "@media (max-width:" in response.text


async def test_the_brand_names_colours_and_signs_the_pages(
    open_client: OpenClient, settings: Settings
) -> None:
    branded = settings.model_copy(
        update={
            "brand_name": "Acme",
            "brand_accent": "#0b6e4f",
            "brand_support_email": "help@acme.example",
            "brand_logo_url": HttpUrl("https://cdn.acme.example/logo.png"),
        }
    )
    async with open_client(branded) as http:
        response = await http.get("/reset-password")
        html = response.text
        [href] = re.findall(r'<link rel="stylesheet" href="([^"]+)">', html)
        css = (await http.get(href)).text

    page = parse(html)
    assert "<title>Choose a new password · Acme</title>" in html
    [logo] = [attrs for tag, attrs in page.tags if tag == "img"]
    assert logo["src"] == "https://cdn.acme.example/logo.png"
    assert (logo["alt"], logo["width"], logo["height"]) == ("Acme", "120", "40")
    assert 'href="mailto:help@acme.example"' in html
    assert "img-src https://cdn.acme.example;" in response.headers["Content-Security-Policy"]
    assert "--accent: #0b6e4f;" in css
