"""Rendering: what the recipient's mail client will show, and that headers stay intact."""

from __future__ import annotations

import uuid
from email import message_from_bytes
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import default

import pytest

from herald_notifier.render import Renderer
from herald_shared.messages import WelcomeEmail

SENDER = Address(display_name="Herald", addr_spec="no-reply@herald.example.org")


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(SENDER)


def welcome(display_name: str, address: str = "zoe@example.com") -> WelcomeEmail:
    return WelcomeEmail(user_id=uuid.uuid4(), email=address, display_name=display_name)


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
    raw, parsed = on_the_wire(renderer.welcome(welcome(display_name)))

    [to] = parsed["To"].addresses
    assert (to.display_name, to.addr_spec) == (display_name, "zoe@example.com")
    raw.decode("ascii")  # headers encoded per RFC 2047, never raw 8-bit
    assert sum(line.startswith(b"To:") for line in header_lines(raw)) == 1


def test_html_escapes_markup_in_the_display_name(renderer: Renderer) -> None:
    _, parsed = on_the_wire(renderer.welcome(welcome("<script>alert(1)</script>")))

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

    with pytest.raises(ValueError, match="CR or LF"):
        renderer.welcome(forged)


def test_message_id_is_derived_from_the_message_id_and_sender_domain(renderer: Renderer) -> None:
    message = welcome("Zoë")

    first = renderer.welcome(message)
    again = renderer.welcome(message)
    other = renderer.welcome(welcome("Zoë"))

    assert first["Message-ID"] == f"<{message.message_id}@herald.example.org>"
    assert again["Message-ID"] == first["Message-ID"]
    assert other["Message-ID"] != first["Message-ID"]


def test_non_ascii_names_survive_in_both_bodies(renderer: Renderer) -> None:
    _, parsed = on_the_wire(renderer.welcome(welcome("Zoë Ørsted")))

    parts = bodies(parsed)
    assert "Hello Zoë Ørsted," in parts["text/plain"]
    assert "Hello Zoë Ørsted," in parts["text/html"]
    assert parsed["From"] == "Herald <no-reply@herald.example.org>"
    assert parsed["Subject"] == "Welcome to Herald"
    assert parsed["Date"] is not None
