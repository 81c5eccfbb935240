"""Turn queue messages into ready-to-send emails.

Every email is built the same way: the recipient checked and put in an
``Address`` (so no display name can add or split a header), a fixed subject,
a deterministic Message-ID, and a text and an HTML body from the package's
Jinja2 templates (HTML autoescaped), both quoted-printable.

A verification link is ``{verify_url}#token={token}``, the token derived
from the message's token id with the link secret (``herald_shared.tokens``).
It exists only inside the rendered email: no exception raised here, and so
no log line or dead letter made of one, can contain it (the recipient is
checked before the link is made, and ``RenderError`` messages are fixed
text).
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime
from email import message_from_bytes
from email.headerregistry import Address, AddressHeader
from email.message import EmailMessage
from email.policy import SMTP, default
from typing import Any

import structlog
from email_validator import EmailNotValidError, validate_email
from jinja2 import Environment, PackageLoader, StrictUndefined, Template, select_autoescape
from pydantic import SecretStr

from herald_shared.messages import (
    AccountEmail,
    AccountExistsEmail,
    Message,
    VerificationEmail,
    VerificationLink,
    WelcomeEmail,
)
from herald_shared.tokens import derive

WELCOME_SUBJECT = "Welcome to Herald"
VERIFICATION_SUBJECTS = {
    "requested": "Verify your email address for Herald",
    "reminder": "Reminder: verify your email address for Herald",
}
ACCOUNT_EXISTS_SUBJECT = "Someone tried to sign up for Herald with your address"

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_UNPRINTABLE = {"Cc", "Cf", "Zl", "Zp", "Cs"}

log = structlog.get_logger(__name__)


class RenderError(ValueError):
    """A message that cannot make a safe email: an unvalidated one, or an address
    the notifier cannot send to (a non-ASCII local part).

    Its text is fixed: it names the field and the rule, never the value, so
    it is safe in a log line or a dead letter.
    """


class Renderer:
    """Renders emails from the package's Jinja2 templates, compiled once per instance."""

    def __init__(self, sender: Address, *, link_secret: SecretStr, verify_url: str) -> None:
        if not reads_back("From", sender):
            raise ValueError("the sender (HERALD_MAIL_FROM) does not read back from its header")
        self.sender = sender
        self._message_id_domain = _ascii_domain(sender.domain)
        self._link_secret = link_secret
        self._verify_url = verify_url
        env = Environment(
            loader=PackageLoader("herald_notifier", "templates"),
            autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
            undefined=StrictUndefined,
            # Block tags on lines of their own leave no blank lines behind.
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )
        self._templates: dict[str, tuple[Template, Template]] = {
            name: (env.get_template(f"{name}.txt.j2"), env.get_template(f"{name}.html.j2"))
            for name in ("welcome", "verification", "account_exists")
        }

    def __repr__(self) -> str:
        # The link secret is a SecretStr already; the URL is all worth showing.
        return f"Renderer(sender={self.sender!r}, verify_url={self._verify_url!r})"

    def welcome(self, message: WelcomeEmail, *, now: datetime | None = None) -> EmailMessage:
        """The welcome email of ``message``: with its verification link
        (schema version 2), or without one (version 1, from before links).

        Raises ``RenderError`` if the recipient cannot form a safe header (e.g.
        a line break in the display name of an unvalidated message).
        """
        email = self._headers(message, WELCOME_SUBJECT, now)
        context: dict[str, Any] = {"display_name": message.display_name, "link": None}
        if message.verification is not None:
            context |= self._link_context(message.verification)
        return self._bodies(email, "welcome", context)

    def verification(
        self, message: VerificationEmail, *, now: datetime | None = None
    ) -> EmailMessage:
        """The email carrying a fresh verification link: asked for, or a reminder.

        Raises ``RenderError`` as ``welcome`` does.
        """
        email = self._headers(message, VERIFICATION_SUBJECTS[message.reason], now)
        context: dict[str, Any] = {
            "display_name": message.display_name,
            "reminder": message.reason == "reminder",
            **self._link_context(message.verification),
        }
        return self._bodies(email, "verification", context)

    def account_exists(
        self, message: AccountExistsEmail, *, now: datetime | None = None
    ) -> EmailMessage:
        """The email telling an account holder that someone tried to sign up
        with their address. Raises ``RenderError`` as ``welcome`` does."""
        email = self._headers(message, ACCOUNT_EXISTS_SUBJECT, now)
        return self._bodies(email, "account_exists", {"display_name": message.display_name})

    def verify_link(self, link: VerificationLink) -> str:
        """The URL an email verification link opens; the token is in its fragment."""
        token = derive(self._link_secret, token_id=link.token_id, purpose="verify_email")
        return f"{self._verify_url}#token={token}"

    def message_id(self, message: Message) -> str:
        """The Message-ID header of ``message``'s email: the same on every attempt,
        so a mail client can collapse a duplicate delivery."""
        return f"<{message.message_id}@{self._message_id_domain}>"

    def _headers(self, message: AccountEmail, subject: str, now: datetime | None) -> EmailMessage:
        email = EmailMessage(policy=SMTP)
        email["From"] = self.sender
        email["To"] = recipient(message)
        email["Subject"] = subject
        email["Date"] = now or datetime.now(UTC)
        email["Message-ID"] = self.message_id(message)
        return email

    def _link_context(self, link: VerificationLink) -> dict[str, Any]:
        return {"link": self.verify_link(link), "expires": format_expiry(link.expires_at)}

    def _bodies(self, email: EmailMessage, name: str, context: dict[str, Any]) -> EmailMessage:
        text, html = self._templates[name]
        # Quoted-printable keeps non-ASCII names intact through relays without
        # 8BITMIME, and keeps the long link lines under SMTP's line limit.
        email.set_content(text.render(context), cte="quoted-printable")
        email.add_alternative(html.render(context), subtype="html", cte="quoted-printable")
        return email


def recipient(message: AccountEmail) -> Address:
    """The To mailbox of ``message``, refusing anything that could add or split a
    header or a recipient.

    A decoded message has passed these checks already (``DisplayName``,
    ``EmailStr``); they are repeated because ``model_construct`` and
    ``model_copy(update=...)`` skip validation. ``Address`` refuses CR and LF
    only, and writes other control characters (NUL, VT...) raw into the
    header, so those are refused here; the SMTP policy encodes all the rest
    (quotes, commas, non-ASCII, U+2028) as one quoted or RFC 2047 word.

    The address goes out in its ASCII form: an internationalised domain as
    IDNA 2008 punycode (the stdlib would write it as an encoded word, which
    no relay can route, and its IDNA 2003 codec maps ``faß.de`` to another
    domain, ``fass.de``). A non-ASCII local part would need SMTPUTF8, which
    the notifier does not use: such an address is refused.
    """
    name = message.display_name
    if not isinstance(name, str) or any(unicodedata.category(c) in _UNPRINTABLE for c in name):
        raise RenderError("display_name: must not contain control characters or line breaks")
    # The texts below never quote the address: it is personal data, kept out of logs.
    try:
        checked = validate_email(message.email, check_deliverability=False)
    except (EmailNotValidError, TypeError):
        raise RenderError("email: not exactly one valid address") from None
    if checked.ascii_email is None:
        raise RenderError("email: a non-ASCII local part needs SMTPUTF8, which is not used")
    try:
        address = Address(display_name=name, addr_spec=checked.ascii_email)
        bare = Address(addr_spec=checked.ascii_email)
    except ValueError:
        raise RenderError("email: not exactly one valid address") from None
    if reads_back("To", address):
        return address
    # The name would not read back as written. The stdlib decodes what looks
    # like an RFC 2047 encoded word while folding: "=?utf-8?q?Ada=0D=0ABcc:...?="
    # is printable ASCII, valid for the contract, and comes out as a raw line
    # break and a Bcc header. The name is cosmetic in the To header (the body
    # still greets it, escaped): the email goes to the bare address instead.
    log.warning("email.display_name_dropped", reason="it does not read back from the header")
    if reads_back("To", bare):
        return bare
    raise RenderError("email: the address does not survive its header")


def reads_back(name: str, address: Address) -> bool:
    """Whether the ``name`` header of ``address``, as written on the wire, is one
    ASCII header line (folded, no other line break or control character) that
    a mail client parses back into exactly ``address``."""
    probe = EmailMessage(policy=SMTP)
    probe[name] = address
    try:
        raw = SMTP.fold(name, probe[name]).encode("ascii")
    except (UnicodeEncodeError, ValueError):
        return False
    unfolded = re.sub(rb"\r\n(?=[ \t])", b"", raw.removesuffix(b"\r\n"))
    if re.search(rb"[\x00-\x08\x0a-\x1f\x7f]", unfolded):
        return False
    try:
        parsed = message_from_bytes(raw + b"\r\n", policy=default)
        header = parsed[name]
        addresses = header.addresses if isinstance(header, AddressHeader) else ()
    except Exception:
        # The stdlib parser reports most garbage as defects but crashes on some.
        return False
    return (
        parsed.keys() == [name]
        and len(addresses) == 1
        and addresses[0].addr_spec == address.addr_spec
        # Folding may collapse runs of whitespace; nothing else may change.
        and _spaced(addresses[0].display_name) == _spaced(address.display_name)
    )


def _spaced(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def format_expiry(moment: datetime) -> str:
    """``moment`` in UTC, as an email says it: ``30 Nov 2026 10:00 UTC``.

    Month names are spelled here, not by ``strftime``, whose ``%b`` follows
    the process locale.
    """
    utc = moment.astimezone(UTC)
    return f"{utc.day} {_MONTHS[utc.month - 1]} {utc.year} {utc:%H:%M} UTC"


def _ascii_domain(domain: str) -> str:
    # Message-ID must be ASCII; an internationalised From domain goes in its
    # IDNA form.
    return domain.encode("idna").decode("ascii")
