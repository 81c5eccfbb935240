"""Rendering: what the recipient's mail client will show, and that headers stay intact."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from email import message_from_bytes
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import default
from functools import partial
from typing import Any

import html5lib
import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from herald_notifier.catalogue import SUBJECTS, format_time
from herald_notifier.render import RenderedEmail, Renderer, RenderError
from herald_shared.messages import AccountEmail, EmailLink, WelcomeEmail
from herald_shared.tasks import TASKS
from herald_shared.tokens import Purpose
from herald_testing.messages import (
    EMAILS,
    LINK_SECRET,
    account_exists_email,
    email_change_email,
    email_changed_email,
    link_token,
    password_changed_email,
    password_reset_email,
    session_reuse_email,
    verification_email,
    verification_link,
    welcome_email,
    welcome_email_v1,
)

SENDER = Address(display_name="Herald", addr_spec="no-reply@herald.example.org")
VERIFY_URL = "https://herald.example.org/verify-email"
RESET_URL = "https://herald.example.org/reset-password"
PAGES: dict[Purpose, str] = {
    "verify_email": VERIFY_URL,
    "reset_password": RESET_URL,
    "change_email": VERIFY_URL,
}

MAKERS: dict[str, Callable[..., AccountEmail]] = EMAILS
"""A valid message of each kind of email, by the name of its template."""


def make_renderer(
    *,
    sender: Address = SENDER,
    link_secret: SecretStr = LINK_SECRET,
    verify_url: str = VERIFY_URL,
    reset_url: str = RESET_URL,
) -> Renderer:
    return Renderer(sender, link_secret=link_secret, verify_url=verify_url, reset_url=reset_url)


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return make_renderer()


def rendered(renderer: Renderer, message: AccountEmail, **options: Any) -> EmailMessage:
    """``message``'s email as ``Renderer.render`` sends it, parsed."""
    return renderer.render(message, **options).message()


def welcome(display_name: str, address: str = "zoe@example.com") -> WelcomeEmail:
    return welcome_email(email=address, display_name=display_name)


def on_the_wire(email: EmailMessage) -> tuple[bytes, EmailMessage]:
    """The bytes a relay receives, and how a mail client parses them back."""
    raw = email.as_bytes()
    parsed = message_from_bytes(raw, policy=default)
    assert isinstance(parsed, EmailMessage)
    return raw, parsed


def header_lines(raw: bytes) -> list[bytes]:
    head = raw.split(b"\r\n\r\n", 1)[0]
    return [line for line in head.split(b"\r\n") if not line.startswith((b" ", b"\t"))]


def bodies(email: EmailMessage) -> dict[str, str]:
    return {part.get_content_type(): part.get_content() for part in email.iter_parts()}


@pytest.mark.parametrize(
    "display_name",
    ['Zoë "Zed" O\'Brien', "Ada, Countess of Lovelace", "山田 太郎", "Dr. <Who>"],
)
def test_to_header_carries_the_display_name_exactly(renderer: Renderer, display_name: str) -> None:
    raw, parsed = on_the_wire(rendered(renderer, welcome(display_name)))

    [to] = parsed["To"].addresses
    assert (to.display_name, to.addr_spec) == (display_name, "zoe@example.com")
    raw.decode("ascii")  # headers encoded per RFC 2047, never raw 8-bit
    assert sum(line.startswith(b"To:") for line in header_lines(raw)) == 1


def test_html_escapes_markup_in_the_display_name(renderer: Renderer) -> None:
    _, parsed = on_the_wire(rendered(renderer, welcome("<script>alert(1)</script>")))

    parts = bodies(parsed)
    assert "<script>" not in parts["text/html"]
    assert "Hello &lt;script&gt;alert(1)&lt;/script&gt;," in parts["text/html"]
    # Plain text is not HTML: the name appears as typed.
    assert "Hello <script>alert(1)</script>," in parts["text/plain"]


def test_a_line_break_in_an_unvalidated_name_cannot_inject_a_header(renderer: Renderer) -> None:
    # model_construct skips validation, as a bug upstream might.
    forged = WelcomeEmail.model_construct(
        user_id=uuid.uuid4(),
        email="zoe@example.com",
        display_name="Zoe\r\nBcc: victim@example.net",
        message_id=uuid.uuid4(),
    )

    with pytest.raises(RenderError, match="control characters or line breaks"):
        rendered(renderer, forged)


def test_message_id_is_derived_from_the_message_id_and_sender_domain(renderer: Renderer) -> None:
    message = welcome("Zoë")

    first = rendered(renderer, message)
    again = rendered(renderer, message)
    other = rendered(renderer, welcome("Zoë"))

    assert first["Message-ID"] == f"<{message.message_id}@herald.example.org>"
    assert again["Message-ID"] == first["Message-ID"]
    assert other["Message-ID"] != first["Message-ID"]


def test_non_ascii_names_survive_in_both_bodies(renderer: Renderer) -> None:
    _, parsed = on_the_wire(rendered(renderer, welcome("Zoë Ørsted")))

    parts = bodies(parsed)
    assert "Hello Zoë Ørsted," in parts["text/plain"]
    assert "Hello Zoë Ørsted," in parts["text/html"]
    assert parsed["From"] == "Herald <no-reply@herald.example.org>"
    assert parsed["Subject"] == "Welcome to Herald"
    assert parsed["Date"] is not None


def said(body: str) -> str:
    """``body`` with its whitespace runs collapsed, as a reader takes wrapped lines."""
    return " ".join(body.split())


def unmarked(body: str) -> str:
    """``body`` without the HTML doctype (its "html" is no link)."""
    return re.sub(r"(?i)<!doctype html>", "", body)


def anchors(html: str) -> list[tuple[str, str]]:
    """The ``href`` and the text of every link of ``html``, as a browser parses it."""
    tree = html5lib.parse(html, namespaceHTMLElements=False)
    return [(a.get("href", ""), "".join(a.itertext())) for a in tree.iter("a")]


def links_in(email: EmailMessage, page: str = VERIFY_URL) -> dict[str, list[str]]:
    """Every link to ``page`` in each body (``href`` values and text), as a client reads it."""
    pattern = re.escape(page) + r"[^\s<\"]*"
    return {kind: re.findall(pattern, body) for kind, body in bodies(email).items()}


def test_welcome_links_to_the_verify_page_with_the_derived_token_in_the_fragment(
    renderer: Renderer,
) -> None:
    message = welcome_email()
    assert message.verification is not None
    expected = f"{VERIFY_URL}?lang=en#token={link_token(message.verification)}"

    _, parsed = on_the_wire(rendered(renderer, message))

    links = links_in(parsed)
    assert links["text/plain"] == [expected]
    # The button's href, and the plain link below it (its href and its text).
    assert links["text/html"] == [expected, expected, expected]
    assert anchors(bodies(parsed)["text/html"]) == [
        (expected, "Verify my email address"),
        (expected, expected),
    ]
    # The token id travels in queue messages; the token itself only in the email.
    assert message.verification.token_id not in parsed.as_string()


@pytest.mark.parametrize("purpose", ["verify_email", "reset_password", "change_email"])
def test_the_token_is_derived_with_the_configured_secret_for_the_links_purpose(
    purpose: Purpose,
) -> None:
    link = verification_link()
    other = SecretStr("another-link-secret-of-32-characters-at-least")
    renderer = make_renderer(link_secret=other)

    url = renderer.link_url(link, purpose)

    assert url == f"{PAGES[purpose]}?lang=en#token={link_token(link, other, purpose=purpose)}"
    assert link_token(link, other, purpose=purpose) != link_token(link, purpose=purpose)


@pytest.mark.parametrize(
    ("locale", "says"),
    [
        ("en", "This link works until November 30, 2026, 10:00 AM UTC."),
        ("de", "Dieser Link funktioniert bis 30. November 2026, 10:00 UTC."),
        ("es", "Este enlace funciona hasta el 30 de noviembre de 2026, 10:00 UTC."),
    ],
)
def test_the_link_says_until_when_it_works_in_utc_in_the_readers_language(
    renderer: Renderer, locale: str, says: str
) -> None:
    paris = timezone(timedelta(hours=1))
    link = EmailLink(token_id="A" * 22, expires_at=datetime(2026, 11, 30, 11, 0, 59, tzinfo=paris))

    _, parsed = on_the_wire(rendered(renderer, welcome_email(verification=link, locale=locale)))

    for body in bodies(parsed).values():
        assert says in said(body)


def test_a_version_1_welcome_has_no_link(renderer: Renderer) -> None:
    _, parsed = on_the_wire(rendered(renderer, welcome_email_v1(display_name="Zoë")))

    parts = bodies(parsed)
    assert parsed["Subject"] == "Welcome to Herald"
    assert "Hello Zoë," in parts["text/plain"]
    assert "Welcome to Herald! Your account is ready." in parts["text/plain"]
    for body in parts.values():
        assert "token" not in body
        assert "link" not in body.lower()
        assert "http" not in unmarked(body)


@pytest.mark.parametrize(
    ("purpose", "make"),
    [
        ("verify_email", lambda link: welcome_email(verification=link)),
        ("reset_password", lambda link: password_reset_email(reset=link)),
        ("change_email", lambda link: email_change_email(confirmation=link)),
    ],
)
def test_the_link_is_html_escaped_in_the_html_part(
    purpose: Purpose, make: Callable[[EmailLink], AccountEmail]
) -> None:
    # A query string's "&" must become "&amp;" in HTML, or a client may read
    # "&lang" as an entity; the text part keeps the URL as it is.
    url = "https://herald.example.org/page?src=email&lang=fr"
    renderer = make_renderer(verify_url=url, reset_url=url)
    link = verification_link()
    # The page's query is kept, its lang replaced by the reader's.
    token = link_token(link, purpose=purpose)
    expected = f"https://herald.example.org/page?src=email&lang=en#token={token}"

    _, parsed = on_the_wire(renderer.render(make(link)).message())

    html = bodies(parsed)["text/html"]
    assert html.count(f'href="{expected.replace("&", "&amp;")}"') == 2
    assert "src=email&lang" not in html
    assert [href for href, _ in anchors(html)] == [expected, expected]
    assert expected in bodies(parsed)["text/plain"]


@pytest.mark.parametrize(
    ("reason", "subject", "opening"),
    [
        (
            "requested",
            "Verify your email address for Herald",
            "Here is the new link you asked for",
        ),
        (
            "reminder",
            "Reminder: verify your email address for Herald",
            "You signed up for Herald but have not confirmed your email address yet.",
        ),
    ],
)
def test_verification_email_by_reason(
    renderer: Renderer, reason: str, subject: str, opening: str
) -> None:
    message = verification_email(reason=reason, email="zoe@example.com", display_name="Zoë")
    expected = f"{VERIFY_URL}?lang=en#token={link_token(message.verification)}"

    _, parsed = on_the_wire(rendered(renderer, message))

    assert parsed["Subject"] == subject
    assert parsed["To"].addresses == (Address("Zoë", addr_spec="zoe@example.com"),)
    assert parsed["Message-ID"] == f"<{message.message_id}@herald.example.org>"
    parts = bodies(parsed)
    assert links_in(parsed) == {"text/plain": [expected], "text/html": [expected] * 3}
    for body in parts.values():
        assert "Hello Zoë," in body
        assert opening in said(body)
        assert "This link works until " in body


def test_account_exists_email_says_nothing_changed_and_has_no_link(renderer: Renderer) -> None:
    message = account_exists_email(email="zoe@example.com", display_name="Zoë")

    _, parsed = on_the_wire(rendered(renderer, message))

    assert parsed["Subject"] == "Someone tried to sign up for Herald with your address"
    assert parsed["To"].addresses == (Address("Zoë", addr_spec="zoe@example.com"),)
    text = said(bodies(parsed)["text/plain"])
    assert "Someone — maybe you — tried to sign up for Herald with this address." in text
    assert "You already have an account; nothing changed." in text
    assert "If it wasn't you, ignore this email." in text
    for body in bodies(parsed).values():
        assert "#token=" not in body
        assert VERIFY_URL not in body


def test_password_reset_email_links_to_the_reset_page_with_a_reset_token(
    renderer: Renderer,
) -> None:
    message = password_reset_email(email="zoe@example.com", display_name="Zoë")
    token = link_token(message.reset, purpose="reset_password")
    expected = f"{RESET_URL}?lang=en#token={token}"

    _, parsed = on_the_wire(rendered(renderer, message))

    assert parsed["Subject"] == "Reset your Herald password"
    assert parsed["To"].addresses == (Address("Zoë", addr_spec="zoe@example.com"),)
    assert parsed["Message-ID"] == f"<{message.message_id}@herald.example.org>"
    assert links_in(parsed, RESET_URL) == {
        "text/plain": [expected],
        "text/html": [expected] * 3,
    }
    assert anchors(bodies(parsed)["text/html"])[0] == (expected, "Choose a new password")
    # Bound to its purpose: the verification token of the same id is another.
    assert token != link_token(message.reset, purpose="verify_email")
    assert links_in(parsed, VERIFY_URL) == {"text/plain": [], "text/html": []}
    assert message.reset.token_id not in parsed.as_string()
    expires = format_time(message.reset.expires_at, locale="en")
    for body in map(said, bodies(parsed).values()):
        assert "Hello Zoë," in body
        assert "asked to reset the password of your Herald account." in body
        assert said(f"This link works until {expires}.") in body
        assert "ignore this email — your password stays as it is." in body


def test_password_changed_email_says_when_and_what_to_do_and_has_no_link(
    renderer: Renderer,
) -> None:
    changed = datetime(2026, 11, 28, 11, 40, 15, tzinfo=timezone(timedelta(hours=1)))
    message = password_changed_email(
        email="zoe@example.com", display_name="Zoë", requested_at=changed
    )

    _, parsed = on_the_wire(rendered(renderer, message))

    assert parsed["Subject"] == "Your Herald password was changed"
    assert parsed["To"].addresses == (Address("Zoë", addr_spec="zoe@example.com"),)
    for body in bodies(parsed).values():
        assert "Hello Zoë," in body
        assert (
            "password of your Herald account was changed on November 28, 2026, 10:40 AM UTC."
            in said(body)
        )
        assert "Every session signed in before the change was signed out." in said(body)
        assert "Forgot password" in said(body)
        assert "contact Herald support" in said(body)
        assert "#token=" not in body
        assert "http" not in unmarked(body)


def test_session_reuse_email_says_which_session_was_ended_and_what_to_do(
    renderer: Renderer,
) -> None:
    detected = datetime(2026, 12, 6, 9, 5, tzinfo=UTC)
    started = datetime(2026, 12, 1, 18, 30, tzinfo=UTC)
    message = session_reuse_email(
        email="zoe@example.com",
        display_name="Zoë",
        requested_at=detected,
        session_started_at=started,
        user_agent='Evil/1.0 <script>alert("x")</script>',
        client_network="203.0.113.7",
    )

    _, parsed = on_the_wire(rendered(renderer, message))

    assert parsed["Subject"] == "A Herald session was signed out for your safety"
    assert parsed["To"].addresses == (Address("Zoë", addr_spec="zoe@example.com"),)
    text, html = bodies(parsed)["text/plain"], bodies(parsed)["text/html"]
    for body in (text, html):
        assert "Hello Zoë," in body
        assert "On December 6, 2026, 9:05 AM UTC, a sign-in token" in said(body)
        assert "so we signed that session out." in said(body)
        assert "signed in on December 1, 2026, 6:30 PM UTC" in said(body)
        assert "network: 203.0.113.7" in said(body)
        assert "change your password: that signs out every other session too." in said(body)
        assert "#token=" not in body
    # The client's own words, shown as text: never markup in the HTML part.
    assert 'browser or app: Evil/1.0 <script>alert("x")</script>' in text
    assert "<script>" not in html
    assert "Evil/1.0 &lt;script&gt;" in html


def test_a_session_reuse_email_without_device_or_network_leaves_those_lines_out(
    renderer: Renderer,
) -> None:
    message = session_reuse_email(user_agent=None, client_network=None)

    for body in bodies(rendered(renderer, message)).values():
        assert "signed in on" in said(body)
        assert "browser or app" not in body
        assert "network:" not in body


def test_email_change_email_links_to_the_verify_page_with_a_change_email_token(
    renderer: Renderer,
) -> None:
    message = email_change_email(email="zoe.new@example.com", display_name="Zoë")
    token = link_token(message.confirmation, purpose="change_email")
    expected = f"{VERIFY_URL}?lang=en#token={token}"

    _, parsed = on_the_wire(rendered(renderer, message))

    assert parsed["Subject"] == "Confirm your new email address for Herald"
    # Sent to the new address, the one to confirm.
    assert parsed["To"].addresses == (Address("Zoë", addr_spec="zoe.new@example.com"),)
    assert parsed["Message-ID"] == f"<{message.message_id}@herald.example.org>"
    assert links_in(parsed) == {"text/plain": [expected], "text/html": [expected] * 3}
    assert anchors(bodies(parsed)["text/html"])[0] == (expected, "Confirm this address")
    # Bound to its purpose: neither a verification nor a reset token of the same id.
    for other in ("verify_email", "reset_password"):
        assert token != link_token(message.confirmation, purpose=other)
    assert links_in(parsed, RESET_URL) == {"text/plain": [], "text/html": []}
    assert message.confirmation.token_id not in parsed.as_string()
    expires = format_time(message.confirmation.expires_at, locale="en")
    for body in bodies(parsed).values():
        assert "Hello Zoë," in body
        assert (
            " ".join(body.split()).count(
                "You asked to use this address for your Herald account. "
                "Open this link to confirm it:"
            )
            == 1
        )
        assert said(f"This link works until {expires}.") in said(body)
        assert "Until you do, your account keeps its current address." in " ".join(body.split())
        assert "If you did not ask for this, ignore this email." in " ".join(body.split())


def test_email_changed_email_says_when_and_what_to_do_and_has_no_link(
    renderer: Renderer,
) -> None:
    changed = datetime(2026, 11, 28, 11, 40, 15, tzinfo=timezone(timedelta(hours=1)))
    message = email_changed_email(
        email="zoe.old@example.com", display_name="Zoë", requested_at=changed
    )

    _, parsed = on_the_wire(rendered(renderer, message))

    assert parsed["Subject"] == "Your Herald email address was changed"
    # Sent to the previous address.
    assert parsed["To"].addresses == (Address("Zoë", addr_spec="zoe.old@example.com"),)
    for body in bodies(parsed).values():
        said = " ".join(body.split())
        assert "Hello Zoë," in said
        assert (
            "The email address of your Herald account was changed on "
            "November 28, 2026, 10:40 AM UTC; "
            "emails about your account now go to the new address."
        ) in said
        assert "If this was not you, contact Herald support right away." in said
        assert "#token=" not in body
        assert "http" not in unmarked(body)


@pytest.mark.parametrize(
    "display_name",
    [
        "Zoe\r\nBcc: evil@example.com",
        "Zoe\nBcc: evil@example.com",
        "Zoe\x00Bcc: evil@example.com",
        "Zoe\x0bBcc: evil@example.com",
        "Zoe\x85Bcc: evil@example.com",
        "Zoe\u2028Bcc: evil@example.com",
        "Zoe\u2029Bcc: evil@example.com",
        "Zoe\u202eevil",
        "Zoe\ud800",
    ],
)
def test_no_email_of_an_unvalidated_name_with_control_characters(
    renderer: Renderer, display_name: str
) -> None:
    # Address() refuses only CR and LF, and writes NUL or VT raw into the
    # header: the renderer refuses every character the contract does.
    for message, render in forged_messages(renderer, display_name=display_name):
        with pytest.raises(RenderError, match="display_name"):
            render(message)


@pytest.mark.parametrize(
    "address",
    ["zoe@example.com, evil@example.com", "zoe@example.com\r\nBcc: evil@example.com", "zoe"],
)
def test_no_email_of_an_unvalidated_address_that_is_not_one_mailbox(
    renderer: Renderer, address: str
) -> None:
    for message, render in forged_messages(renderer, email=address):
        with pytest.raises(RenderError, match="email") as refused:
            render(message)
        # The error is logged and dead-lettered: no address (personal data) in it.
        assert "evil" not in str(refused.value)


def forged_messages(
    renderer: Renderer, **fields: str
) -> list[tuple[AccountEmail, Callable[[Any], EmailMessage]]]:
    """Each kind of message with ``fields`` forced in past validation (as
    ``model_construct`` or a bug upstream might), with its render method."""
    return [
        (welcome_email().model_copy(update=fields), partial(rendered, renderer)),
        (verification_email().model_copy(update=fields), partial(rendered, renderer)),
        (account_exists_email().model_copy(update=fields), partial(rendered, renderer)),
        (password_reset_email().model_copy(update=fields), partial(rendered, renderer)),
        (password_changed_email().model_copy(update=fields), partial(rendered, renderer)),
        (email_change_email().model_copy(update=fields), partial(rendered, renderer)),
        (email_changed_email().model_copy(update=fields), partial(rendered, renderer)),
    ]


@pytest.mark.parametrize(
    ("make", "link_of", "purpose"),
    [
        (welcome_email, lambda message: message.verification, "verify_email"),
        (password_reset_email, lambda message: message.reset, "reset_password"),
        (email_change_email, lambda message: message.confirmation, "change_email"),
    ],
    ids=["welcome", "password_reset", "email_change"],
)
def test_a_forged_message_never_leaks_its_link_into_the_error(
    renderer: Renderer,
    make: Callable[[], AccountEmail],
    link_of: Callable[[Any], EmailLink],
    purpose: Purpose,
) -> None:
    # The recipient is checked before the link is made: a refusal cannot quote it.
    message = make().model_copy(update={"display_name": "Zoe\r\nBcc: evil@example.com"})

    with pytest.raises(RenderError) as refused:
        renderer.render(message)

    assert link_token(link_of(message), purpose=purpose) not in str(refused.value)
    assert refused.value.__cause__ is None
    assert refused.value.__suppress_context__ or refused.value.__context__ is None


@pytest.mark.parametrize(
    ("address", "on_the_envelope"),
    [
        ("zoe@exämple.com", "zoe@xn--exmple-cua.com"),
        # IDNA 2008, as the address was validated: IDNA 2003 would make it fass.de.
        ("zoe@faß.de", "zoe@xn--fa-hia.de"),
    ],
)
def test_an_internationalised_domain_goes_out_as_punycode(
    renderer: Renderer, address: str, on_the_envelope: str
) -> None:
    raw, parsed = on_the_wire(rendered(renderer, welcome("Zoë", address)))

    [to] = parsed["To"].addresses
    assert (to.display_name, to.addr_spec) == ("Zoë", on_the_envelope)
    raw.decode("ascii")


def test_a_non_ascii_local_part_is_refused_rather_than_mangled(renderer: Renderer) -> None:
    # Valid for the contract (EmailStr), but it needs SMTPUTF8.
    message = welcome("Zoë", "zoë@example.com")

    with pytest.raises(RenderError, match="SMTPUTF8") as refused:
        rendered(renderer, message)

    assert "zoë" not in str(refused.value)


@pytest.mark.parametrize(
    "display_name",
    [
        # Printable ASCII; the stdlib decodes these encoded words while
        # folding the header and writes what they hide.
        "=?utf-8?q?Ada=0D=0ABcc:_evil=40example.com?=",
        "=?utf-8?b?QWRhDQpCY2M6IGV2aWxAZXhhbXBsZS5jb20=?=",
        "=?utf-8?q?x=0D=0A=0D=0A<a_href=3Dhttps://evil.example>log_in</a>?=",
        "=?utf-8?q?a=22_=3Cevil=40example.com=3E=2C_=22b?=",
        "x =?utf-8?q?=00?= y",
        "=?utf-8?q?support=40herald.example.org?=",
    ],
)
def test_a_name_hiding_an_encoded_word_is_left_out_of_the_to_header(
    renderer: Renderer, display_name: str
) -> None:
    # The contract refuses encoded words now; a message built without
    # validation (an older producer) must still not inject a header.
    message = welcome("Zoe").model_copy(update={"display_name": display_name})

    with capture_logs() as logs:
        raw, parsed = on_the_wire(rendered(renderer, message))

    assert parsed["To"].addresses == (Address(addr_spec="zoe@example.com"),)
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert b"evil" not in head
    assert b"Bcc" not in head
    assert b"\x00" not in head
    assert [line.split(b":", 1)[0] for line in header_lines(raw)] == [
        b"From",
        b"To",
        b"Subject",
        b"Date",
        b"Message-ID",
        b"MIME-Version",
        b"Content-Type",
    ]
    # The greeting keeps the name as typed, as text (escaped in the HTML).
    assert f"Hello {display_name}," in bodies(parsed)["text/plain"]
    assert [entry["event"] for entry in logs] == ["email.display_name_dropped"]
    assert display_name not in repr(logs)


@pytest.mark.parametrize(
    "display_name",
    ["Ada  Lovelace", "Ada=?", "=?", "Ada ?= x", "Dr. (Who) [x]; y:", '"evil@example.com"'],
)
def test_ordinary_odd_names_stay_in_the_to_header(renderer: Renderer, display_name: str) -> None:
    with capture_logs() as logs:
        _, parsed = on_the_wire(rendered(renderer, welcome(display_name)))

    [to] = parsed["To"].addresses
    assert to.addr_spec == "zoe@example.com"
    # Folding may collapse a run of spaces; nothing else changes.
    assert " ".join(to.display_name.split()) == " ".join(display_name.split())
    assert logs == []


def test_a_sender_that_does_not_read_back_is_refused_at_startup() -> None:
    forged = Address(
        display_name="=?utf-8?q?Herald=0D=0ABcc:_x=40example.com?=", addr_spec="a@b.org"
    )

    with pytest.raises(ValueError, match="HERALD_MAIL_FROM"):
        make_renderer(sender=forged)


# --- the wire: what the relay receives, for every kind of email and odd names ---

WIRE_NAMES = [
    "Ada Lovelace",
    "O'Brien-Smith",
    "Zoë Ørsted",
    'Zoë "Zed" O\'Brien',
    "山田 太郎",
    "Dr. <Who>",
    "Ada  Lovelace",
    "Ada=?",
    "X" * 70,
    "Zoë " * 30,
    "=?utf-8?q?Ada=0D=0ABcc:_evil=40example.com?=",
]
NOW = datetime(2026, 11, 28, 10, 40, 15, tzinfo=UTC)


@pytest.mark.parametrize("display_name", WIRE_NAMES)
@pytest.mark.parametrize("kind", list(MAKERS))
def test_the_wire_is_7_bit_crlf_and_its_envelope_is_its_headers(
    renderer: Renderer, display_name: str, kind: str
) -> None:
    message = MAKERS[kind](email="zoe@exämple.com").model_copy(
        update={"display_name": display_name}
    )

    wire = renderer.render(message, now=NOW)

    parsed = message_from_bytes(wire.data, policy=default)
    assert isinstance(parsed, EmailMessage)
    # 7-bit, CRLF only, quoted-printable lines within RFC 2045's 76.
    lines = wire.data.decode("ascii").split("\r\n")
    assert b"\r" not in wire.data.replace(b"\r\n", b"")
    assert b"\n" not in wire.data.replace(b"\r\n", b"")
    assert max(len(line) for line in lines[lines.index("") :]) <= 76
    # What a client parses, the email package writes back as it is.
    assert RenderedEmail.message(wire).as_bytes() == wire.data
    # The envelope is the headers' addresses.
    assert wire.sender == parsed["From"].addresses[0].addr_spec == "no-reply@herald.example.org"
    [to] = parsed["To"].addresses
    assert wire.recipient == to.addr_spec == "zoe@xn--exmple-cua.com"
    assert wire.message_id == parsed["Message-ID"] == renderer.message_id(message)
    assert parsed["Date"].datetime == NOW


@pytest.mark.parametrize(
    "display_name",
    [
        "Zoë " + "a" * 90,
        "trailing space ",
        "=?utf-8?q?x?= = == =",
        "From me",
        "x" * 75 + "=",
        "é" * 40,
    ],
)
def test_each_body_decodes_to_the_text_its_template_rendered(
    renderer: Renderer, display_name: str
) -> None:
    # Past validation (the contract refuses encoded words): the body must still say it.
    message = welcome("Zoe").model_copy(update={"display_name": display_name})

    parsed = rendered(renderer, message)

    content = renderer._content(message)  # the same link: derived, not random
    context = {"display_name": display_name, "subject": content.subject, **content.context}
    text, html = renderer._bodies("welcome", "en", context)
    shown = {kind: body.replace("\r\n", "\n") for kind, body in bodies(parsed).items()}
    assert shown == {"text/plain": text, "text/html": html}


def test_render_makes_each_kind_of_email(renderer: Renderer) -> None:
    subjects = {str(renderer.render(make()).message()["Subject"]) for make in MAKERS.values()} | {
        str(rendered(renderer, verification_email(reason="reminder"))["Subject"])
    }

    assert subjects == {
        "Welcome to Herald",
        "Verify your email address for Herald",
        "Reminder: verify your email address for Herald",
        "Someone tried to sign up for Herald with your address",
        "Reset your Herald password",
        "Your Herald password was changed",
        "Confirm your new email address for Herald",
        "Your Herald email address was changed",
        "A Herald session was signed out for your safety",
    }
    assert subjects == {source % {"product": "Herald"} for source in SUBJECTS.values()}


def test_there_is_an_email_for_every_email_task(renderer: Renderer) -> None:
    assert {task.message for task in TASKS.values()} == {type(make()) for make in MAKERS.values()}
