"""The emails people read: every kind in every language, one layout that mail
clients can show (strict HTML, inlined CSS, lines within RFC 5322's limit), the
same link in both parts, and the brand."""

from __future__ import annotations

import re
from collections.abc import Callable
from email.headerregistry import Address
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element

import html5lib
import pytest

from herald_notifier import render
from herald_notifier.catalogue import CATALOGUE, SUBJECTS
from herald_notifier.render import Renderer, load_translations, split_stylesheet
from herald_shared.brand import Brand
from herald_shared.locales import LOCALES
from herald_shared.messages import AccountEmail
from herald_testing.messages import (
    EMAILS,
    LINK_SECRET,
    email_changed_email,
    password_reset_email,
    verification_email,
    welcome_email,
    welcome_email_v1,
    welcome_email_v2,
)

SENDER = Address("Acme Accounts", addr_spec="no-reply@acme.example.org")
VERIFY_URL = "https://acme.example.org/verify-email"
RESET_URL = "https://acme.example.org/reset-password"
BRAND = Brand(
    name="Acme",
    support_email="help@acme.example.org",
    accent="#aa3300",
    logo_url="https://cdn.acme.example.org/logo.png",
)

KINDS: dict[str, Callable[..., AccountEmail]] = EMAILS | {
    "verification_reminder": lambda **fields: verification_email(reason="reminder", **fields),
}
"""A message of every kind and variant the catalogue has, by subject name."""

GERMAN_SUBJECTS = {
    "welcome": "Willkommen bei Acme",
    "verification": "Bestätige deine E-Mail-Adresse für Acme",
    "verification_reminder": "Erinnerung: Bestätige deine E-Mail-Adresse für Acme",
    "account_exists": "Jemand wollte sich mit deiner Adresse bei Acme registrieren",
    "password_reset": "Setze dein Acme-Passwort zurück",
    "password_changed": "Dein Acme-Passwort wurde geändert",
    "email_change": "Bestätige deine neue E-Mail-Adresse für Acme",
    "email_changed": "Deine E-Mail-Adresse bei Acme wurde geändert",
    "session_reuse": "Eine Acme-Sitzung wurde zu deiner Sicherheit abgemeldet",
}


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(
        SENDER, link_secret=LINK_SECRET, verify_url=VERIFY_URL, reset_url=RESET_URL, brand=BRAND
    )


@pytest.fixture(scope="module")
def plain_renderer() -> Renderer:
    """A renderer with the default brand: Herald, no logo, no support address."""
    return Renderer(SENDER, link_secret=LINK_SECRET, verify_url=VERIFY_URL, reset_url=RESET_URL)


def parts_of(email: EmailMessage) -> tuple[str, str]:
    """The text and the HTML part of ``email``, decoded."""
    text = email.get_body(("plain",))
    html = email.get_body(("html",))
    assert text is not None
    assert html is not None
    return str(text.get_content()), str(html.get_content())


def strict_tree(html: str) -> Element:
    """``html`` parsed by html5lib in strict mode: any parse error fails."""
    parser = html5lib.HTMLParser(strict=True, namespaceHTMLElements=False)
    tree: Element = parser.parse(html)
    return tree


def said(text: str) -> str:
    return " ".join(text.split())


def test_the_kinds_here_are_every_subject_of_the_catalogue() -> None:
    assert set(KINDS) == set(SUBJECTS)
    assert {kind.template for kind in CATALOGUE} <= set(KINDS)


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_renders_in_every_locale_as_mail_clients_need(
    renderer: Renderer, kind: str, locale: str
) -> None:
    message = KINDS[kind](locale=locale, display_name="Zoë Ørsted")

    wire = renderer.render(message)
    email = wire.message()
    text, html = parts_of(email)

    # RFC 5322: no line over 998 octets, on the wire and in the HTML itself
    # (a relay may re-encode it as 8bit).
    assert max(len(line) for line in wire.data.split(b"\r\n")) <= 998
    assert max(len(line.encode()) for line in html.splitlines()) <= 998
    tree = strict_tree(html)
    root = tree if tree.tag == "html" else tree.find("html")
    assert root is not None
    assert (root.get("lang"), root.get("dir")) == (locale, "ltr")
    assert str(email["Subject"]) == renderer.subject(SUBJECTS[kind], locale)
    assert tree.findtext(".//title") == str(email["Subject"])
    # Every layout table is presentation only (screen readers skip its cells).
    tables = list(tree.iter("table"))
    assert tables
    assert {table.get("role") for table in tables} == {"presentation"}
    # The action's button and the plain text part carry the same link.
    buttons = [a for a in tree.iter("a") if a.get("class") == "button-link"]
    link = (
        renderer.link_url(link_of(message), purpose_of(message), locale=locale) if buttons else None
    )
    text_links = re.findall(r"https://acme\.example\.org/\S+", text)
    if link is None:
        assert text_links == []
        assert "#token=" not in html
    else:
        assert [a.get("href") for a in buttons] == [link]
        assert text_links == [link]
        assert f"?lang={locale}#token=" in link
    # The text part reads alone: greeting, signature, why it came; no markup.
    greeting = load_translations(locale).gettext("Hello %(name)s,") % {"name": "Zoë Ørsted"}
    assert text.startswith(greeting)
    assert greeting in said("".join(tree.itertext()))
    assert not re.search(r"<[a-z/!]", text)
    # Sentences of one paragraph keep their space between them in both parts.
    for body in (text, "".join(tree.itertext())):
        assert not re.search(r"\w[.:;!?][A-ZÄÖÜÑ¿¡]", body)
    assert "help@acme.example.org" in text


def link_of(message: AccountEmail) -> Any:
    kind = next(row for row in CATALOGUE if row.message is type(message))
    return kind.link_of(message)


def purpose_of(message: AccountEmail) -> Any:
    kind = next(row for row in CATALOGUE if row.message is type(message))
    return kind.purpose


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_german_reader_gets_the_german_subject(renderer: Renderer, kind: str) -> None:
    email = renderer.render(KINDS[kind](locale="de")).message()

    assert str(email["Subject"]) == GERMAN_SUBJECTS[kind]


@pytest.mark.parametrize(
    ("locale", "shown"), [("de-AT", "de"), ("es-MX", "es"), ("pt-BR", "en"), ("en-GB", "en")]
)
def test_a_locale_without_its_own_catalogue_falls_back_along_its_chain(
    renderer: Renderer, locale: str, shown: str
) -> None:
    email = renderer.render(welcome_email(locale=locale)).message()
    text, html = parts_of(email)

    assert f'<html lang="{shown}"' in html
    assert f"?lang={shown}#token=" in text
    assert str(email["Subject"]) == renderer.subject(SUBJECTS["welcome"], shown)


@pytest.mark.parametrize(
    "make",
    [
        welcome_email_v1,
        welcome_email_v2,
        lambda: verification_email(schema_version=1, locale=None),
        lambda: password_reset_email(schema_version=1, locale=None),
        lambda: email_changed_email(schema_version=1, locale=None),
    ],
    ids=["welcome-v1", "welcome-v2", "verification-v1", "password-reset-v1", "email-changed-v1"],
)
def test_a_message_from_before_locales_is_written_in_english(
    renderer: Renderer, make: Callable[[], AccountEmail]
) -> None:
    message = make()
    assert message.locale is None

    email = renderer.render(message).message()
    text, html = parts_of(email)

    assert '<html lang="en"' in html
    assert text.startswith("Hello Ada,")
    assert "The Acme team" in text
    assert "#token=" not in text or "?lang=en#token=" in text


def test_the_spanish_welcome_reads_spanish_in_both_parts(renderer: Renderer) -> None:
    email = renderer.render(welcome_email(locale="es", display_name="Zoë")).message()
    text, html = parts_of(email)

    assert str(email["Subject"]) == "Te damos la bienvenida a Acme"
    for body in (said(text), said("".join(strict_tree(html).itertext()))):
        assert "Hola, Zoë:" in body
        assert "¡Te damos la bienvenida a Acme! Tu cuenta está lista." in body
        assert "Este enlace funciona hasta el " in body
        assert "El equipo de Acme" in body
        assert "Recibes este correo porque alguien se registró en Acme con esta dirección." in body
        assert "¿Preguntas? Escribe a help@acme.example.org." in body
    assert "Verificar mi dirección de correo" in html


def test_the_layout_has_a_hidden_preheader_the_brand_and_a_bulletproof_button(
    renderer: Renderer,
) -> None:
    _, html = parts_of(renderer.render(password_reset_email()).message())
    tree = strict_tree(html)

    [preheader] = [div for div in tree.iter("div") if div.get("class") == "preheader"]
    assert preheader.text == "Choose a new password for your Acme account."
    assert "display: none" in preheader.get("style", "")
    [logo] = tree.iter("img")
    assert (logo.get("src"), logo.get("alt")) == (BRAND.logo_url, "Acme")
    assert (logo.get("width"), logo.get("height")) == ("120", "40")
    # The button is a table cell with the accent as its background, for Outlook too.
    [cell] = [td for td in tree.iter("td") if td.get("class") == "button-cell"]
    assert cell.get("bgcolor") == "#aa3300"
    assert "background-color: #aa3300" in cell.get("style", "")
    [button] = list(cell.iter("a"))
    assert button.text == "Choose a new password"
    assert "padding: 12px 24px" in button.get("style", "")
    # The support address is text: clients link it themselves.
    assert [a for a in tree.iter("a") if (a.get("href") or "").startswith("mailto:")] == []
    assert "Questions? Write to help@acme.example.org." in said("".join(tree.itertext()))


def test_without_a_logo_the_name_is_the_header_and_nothing_needs_images(
    plain_renderer: Renderer,
) -> None:
    text, html = parts_of(plain_renderer.render(welcome_email()).message())
    tree = strict_tree(html)

    assert list(tree.iter("img")) == []
    [brand] = [span for span in tree.iter("span") if span.get("class") == "brand"]
    assert brand.text == "Herald"
    # No support address configured: none is named.
    assert "Questions?" not in text
    assert "Questions?" not in html


def test_the_stylesheet_is_inlined_and_its_media_queries_stay_in_the_head(
    renderer: Renderer,
) -> None:
    _, html = parts_of(renderer.render(welcome_email()).message())
    tree = strict_tree(html)

    [style] = list(tree.iter("style"))
    assert "@media (prefers-color-scheme: dark)" in (style.text or "")
    assert "@media only screen and (max-width: 620px)" in (style.text or "")
    metas = {meta.get("name"): meta.get("content") for meta in tree.iter("meta")}
    assert metas["color-scheme"] == "light dark"
    assert metas["supported-color-schemes"] == "light dark"
    assert metas["viewport"] == "width=device-width, initial-scale=1"
    [container] = [t for t in tree.iter("table") if t.get("class") == "container"]
    assert container.get("width") == "600"
    assert "max-width: 600px" in container.get("style", "")
    # Every element of the body is styled inline (Gmail drops <style> in some views),
    # and the dark colours only apply under their media query.
    body = tree.find("body")
    assert body is not None
    assert "background-color: #f3f4f6" in body.get("style", "")
    assert "!important" not in "".join(element.get("style", "") for element in tree.iter())


def test_split_stylesheet_keeps_every_rule_once() -> None:
    css = (
        "/* a comment */\n.a { color: red; }\n@media (x) {\n  .a { color: blue; }\n}\n"
        ".b { margin: 0; }\n@media (y) { .b { margin: 1px; } }\n"
    )

    plain, media = split_stylesheet(css)

    assert plain == ".a { color: red; }\n.b { margin: 0; }"
    assert media == "@media (x) {\n  .a { color: blue; }\n}\n@media (y) { .b { margin: 1px; } }"


def test_a_missing_compiled_catalogue_stops_the_renderer_rather_than_send_english(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(render, "LOCALE_DIR", tmp_path)

    with pytest.raises(RuntimeError, match="no compiled catalogue for 'de'"):
        load_translations("de")
    load_translations("en")  # the source language needs none
