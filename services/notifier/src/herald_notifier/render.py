"""Turn queue messages into ready-to-send emails."""

from __future__ import annotations

from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from herald_shared.messages import Message, WelcomeEmail

WELCOME_SUBJECT = "Welcome to Herald"


class Renderer:
    """Renders emails from the package's Jinja2 templates, compiled once per instance."""

    def __init__(self, sender: Address) -> None:
        self.sender = sender
        self._message_id_domain = _ascii_domain(sender.domain)
        env = Environment(
            loader=PackageLoader("herald_notifier", "templates"),
            autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
            undefined=StrictUndefined,
            keep_trailing_newline=True,
        )
        self._welcome_text = env.get_template("welcome.txt.j2")
        self._welcome_html = env.get_template("welcome.html.j2")

    def welcome(self, message: WelcomeEmail, *, now: datetime | None = None) -> EmailMessage:
        """The welcome email for ``message``: text and HTML alternatives.

        Raises ``ValueError`` if the recipient cannot form a safe header (e.g.
        a line break in the display name of an unvalidated message).
        """
        context = {"display_name": message.display_name}
        email = EmailMessage(policy=SMTP)
        # Address() refuses CR/LF and the header policy encodes the rest, so no
        # display name can add or split a header.
        email["From"] = self.sender
        email["To"] = Address(display_name=message.display_name, addr_spec=message.email)
        email["Subject"] = WELCOME_SUBJECT
        email["Date"] = now or datetime.now(UTC)
        email["Message-ID"] = self.message_id(message)
        # Quoted-printable keeps non-ASCII names intact through relays without 8BITMIME.
        email.set_content(self._welcome_text.render(context), cte="quoted-printable")
        email.add_alternative(
            self._welcome_html.render(context), subtype="html", cte="quoted-printable"
        )
        return email

    def message_id(self, message: Message) -> str:
        """The Message-ID header of ``message``'s email: the same on every attempt,
        so a mail client can collapse a duplicate delivery."""
        return f"<{message.message_id}@{self._message_id_domain}>"


def _ascii_domain(domain: str) -> str:
    # Message-ID must be ASCII; an internationalised From domain goes in its
    # IDNA form.
    return domain.encode("idna").decode("ascii")
