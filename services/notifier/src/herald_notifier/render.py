"""Turn queue messages into ready-to-send emails.

Every email is built the same way: the recipient checked and put in an
``Address`` (so no display name can add or split a header), a fixed subject,
a deterministic Message-ID, and a text and an HTML body from the package's
Jinja2 templates (HTML autoescaped), both quoted-printable.

**The bytes are written here, not by the email package.** Building an
``EmailMessage`` and serialising it cost ~3 ms of CPU per email (each header
set or read is parsed by the email package's header parser, and
``HeaderRegistry`` makes a new class per header), more than everything else
the notifier does per email. ``Renderer.render`` writes the same email
(``test_render`` checks it against the email package's: the same header
lines, bodies that decode to the same text, and bytes the email package
parses and writes back unchanged) at a fifth of the cost:

- every header but To is fixed or built from checked data: From and the
  subjects are folded by the email package once, at start-up; Date is
  written as ``email.utils.format_datetime`` writes it; the Message-ID's
  form is checked against the email package at start-up;
- the To header is still folded by the email package and must read back
  (``recipient``), and that folded line is the one sent; only a name of
  plain words and a plain address, which the email package writes as they
  are, skip it (``_plain_line``);
- the bodies are quoted-printable encoded by ``binascii.b2a_qp`` (C) rather
  than ``email.quoprimime`` (Python); it breaks lines at 76 characters, as
  RFC 2045 asks (the email package allows 78), and like it encodes every
  ``=``, so the multipart boundary (which starts with ``==``) cannot occur in
  a body.

The emails: a welcome (with a verification link from schema version 2), a
fresh verification link (asked for, or a reminder), "someone tried to sign
up with your address", a password reset link, "your password was changed"
(no link), a link confirming a new email address (sent to that address), and
"your email address was changed" (to the previous address; no link).

Which message carries which link is known in one place, ``link_of``: the
renderer puts that link in the email, and the notifier's handlers skip an
email whose link has expired by the time an attempt starts.

A link is ``{page}#token={token}``: the page is ``verify_url`` for an email
verification link and for an email change confirmation link (the page posts
either token to the same API endpoint), ``reset_url`` for a password reset
link; the token is derived from the message's token id for that purpose with
the link secret (``herald_shared.tokens``), so it cannot be spent on another. It exists only
inside the rendered email: no exception raised here, and so no log line or
dead letter made of one, can contain it (the recipient is checked before the
link is made, and ``RenderError`` messages are fixed text).
"""

from __future__ import annotations

import binascii
import random
import re
import sys
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.headerregistry import Address, AddressHeader, BaseHeader, HeaderRegistry
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from typing import Any, NamedTuple, cast

import structlog
from email_validator import EmailNotValidError, validate_email
from jinja2 import Environment, PackageLoader, StrictUndefined, Template, select_autoescape
from pydantic import SecretStr

from herald_notifier.catalogue import CATALOGUE, SUBJECTS, format_time, kind_of
from herald_shared.messages import AccountEmail, EmailLink, Message
from herald_shared.tokens import Purpose, derive

_PLAIN_NAME = re.compile(r"[A-Za-z0-9'-]+(?: [A-Za-z0-9'-]+)*")
_PLAIN_ADDRESS = re.compile(
    r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
)
_MAX_LINE = SMTP.max_line_length or 78
_MESSAGE_ID_PROBE = "00000000-0000-0000-0000-000000000000"
_BOUNDARY_WIDTH = len(repr(sys.maxsize - 1))
_FOLD = re.compile(rb"\r\n(?=[ \t])")
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_PART_HEAD = {
    subtype: f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
    "Content-Transfer-Encoding: quoted-printable\r\n\r\n".encode("ascii")
    for subtype in ("plain", "html")
}

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_ZERO = timedelta(0)
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_UNPRINTABLE = {"Cc", "Cf", "Zl", "Zp", "Cs"}

log = structlog.get_logger(__name__)


class RenderError(ValueError):
    """A message that cannot make a safe email: an unvalidated one, or an address
    the notifier cannot send to (a non-ASCII local part).

    Its text is fixed: it names the field and the rule, never the value, so
    it is safe in a log line or a dead letter.
    """


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    """An email as the relay receives it: the envelope, and the bytes after DATA
    (CRLF line endings, 7-bit)."""

    sender: str
    """MAIL FROM: the From address, its domain in IDNA form."""
    recipient: str
    """RCPT TO: the To address, in its ASCII form."""
    message_id: str
    """The Message-ID header."""
    data: bytes

    def message(self) -> EmailMessage:
        """``data`` as a mail client parses it (its ``as_bytes()`` gives ``data`` back)."""
        parsed = message_from_bytes(self.data, policy=SMTP)
        assert isinstance(parsed, EmailMessage)
        return parsed


class _Content(NamedTuple):
    """What an email says: its template, its subject, and what its template is
    given besides the display name, which every email greets."""

    template: str
    subject: str
    context: dict[str, Any]


class Renderer:
    """Renders emails from the package's Jinja2 templates, compiled once per instance,
    with every constant header line folded once."""

    def __init__(
        self, sender: Address, *, link_secret: SecretStr, verify_url: str, reset_url: str
    ) -> None:
        from_line = _folded("From", sender)
        if from_line is None:
            raise ValueError("the sender (HERALD_MAIL_FROM) does not read back from its header")
        self.sender = sender
        self._from_line = from_line
        self._message_id_domain = _ascii_domain(sender.domain)
        self._envelope_sender = Address(
            username=sender.username, domain=self._message_id_domain
        ).addr_spec
        # Written by hand only where the email package would write the same.
        probe = f"<{_MESSAGE_ID_PROBE}@{self._message_id_domain}>"
        self._message_id_verbatim = _header_line("Message-ID", probe) == _message_id_line(probe)
        self._subject_lines = {
            subject: _header_line("Subject", subject) for subject in SUBJECTS.values()
        }
        self._link_secret = link_secret
        self._pages: dict[Purpose, str] = {
            "verify_email": verify_url,
            "reset_password": reset_url,
            # The verify page posts either token to the API's verify endpoint.
            "change_email": verify_url,
        }
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
            kind.template: (
                env.get_template(f"{kind.template}.txt.j2"),
                env.get_template(f"{kind.template}.html.j2"),
            )
            for kind in CATALOGUE
        }

    def __repr__(self) -> str:
        # The link secret is a SecretStr already; the pages are all worth showing.
        return (
            f"Renderer(sender={self.sender!r}, verify_url={self._pages['verify_email']!r}, "
            f"reset_url={self._pages['reset_password']!r})"
        )

    def render(self, message: AccountEmail, *, now: datetime | None = None) -> RenderedEmail:
        """The email of ``message`` (any message of ``CATALOGUE``), ready for the relay.

        Raises ``RenderError`` if the recipient cannot form a safe header (e.g.
        a line break in the display name of an unvalidated message).
        """
        # The recipient is checked before the content, and so the link, is made:
        # no RenderError can quote the link.
        to = _recipient(message)
        return self._email(message, to, self._content(message), now)

    def link_url(self, link: EmailLink, purpose: Purpose) -> str:
        """The URL ``link`` opens: the page of ``purpose`` (``reset_url`` for
        ``reset_password``, else ``verify_url``) with the token derived for
        ``purpose`` in its fragment."""
        token = derive(self._link_secret, token_id=link.token_id, purpose=purpose)
        return f"{self._pages[purpose]}#token={token}"

    def message_id(self, message: Message) -> str:
        """The Message-ID header of ``message``'s email: the same on every attempt,
        so a mail client can collapse a duplicate delivery."""
        return f"<{message.message_id}@{self._message_id_domain}>"

    def _content(self, message: AccountEmail) -> _Content:
        """What ``message``'s email says, from its row of the catalogue. It makes
        the link: call it once the recipient is checked."""
        kind = kind_of(message)
        link = kind.link_of(message)
        context = dict(kind.context(message))
        if kind.purpose is not None:
            context |= self._link_context(link, kind.purpose)
        return _Content(kind.template, kind.subject_of(message), context)

    def _link_context(self, link: EmailLink | None, purpose: Purpose) -> dict[str, Any]:
        if link is None:
            return {"link": None}
        return {"link": self.link_url(link, purpose), "expires": format_time(link.expires_at)}

    def _email(
        self,
        message: AccountEmail,
        to: tuple[Address, bytes],
        content: _Content,
        now: datetime | None,
    ) -> RenderedEmail:
        address, to_line = to
        context = {"display_name": message.display_name, **content.context}
        text, html = self._bodies(content.template, context)
        boundary = _boundary(text, html)
        message_id = self.message_id(message)
        date = _date(now or datetime.now(UTC))
        data = b"".join(
            (
                self._from_line,
                to_line,
                self._subject_lines[content.subject],
                f"Date: {date}\r\n".encode("ascii"),
                _message_id_line(message_id)
                if self._message_id_verbatim
                else _header_line("Message-ID", message_id),
                b"MIME-Version: 1.0\r\nContent-Type: multipart/alternative;\r\n"
                b' boundary="%s"\r\n\r\n--%s\r\n' % (boundary, boundary),
                _PART_HEAD["plain"],
                text,
                b"\r\n--%s\r\n" % boundary,
                _PART_HEAD["html"],
                html,
                b"\r\n--%s--\r\n" % boundary,
            )
        )
        return RenderedEmail(
            sender=self._envelope_sender,
            recipient=address.addr_spec,
            message_id=message_id,
            data=data,
        )

    def _bodies(self, name: str, context: dict[str, Any]) -> tuple[bytes, bytes]:
        text, html = self._templates[name]
        # Quoted-printable keeps non-ASCII names intact through relays without
        # 8BITMIME, and keeps the long link lines under SMTP's line limit.
        return quoted_printable(text.render(context)), quoted_printable(html.render(context))


def quoted_printable(text: str) -> bytes:
    """``text`` as the body of a quoted-printable UTF-8 part, CRLF line endings,
    as ``EmailMessage.set_content(text, cte="quoted-printable")`` encodes it
    (but for lines of at most 76 characters)."""
    lines = text.encode("utf-8").splitlines()
    # binascii keeps the line ending it sees first (CRLF here) and soft-breaks at 76.
    return binascii.b2a_qp(b"\r\n".join(lines) + b"\r\n", istext=True)


def _boundary(*bodies: bytes) -> bytes:
    # The email package's form. Quoted-printable writes "=" only before two hex
    # digits or a line break, so "==" never occurs in a body; checked anyway.
    while True:
        token = random.randrange(sys.maxsize)  # noqa: S311  (unique, not secret)
        boundary = b"===============%0*d==" % (_BOUNDARY_WIDTH, token)
        if not any(boundary in body for body in bodies):
            return boundary


def _date(moment: datetime) -> str:
    """``email.utils.format_datetime(moment)``, the Date header's value, without
    its strftime("%z") (which re-reads the local time zone, a stat(), per call)
    for a moment in UTC."""
    if moment.utcoffset() != _ZERO:
        return format_datetime(moment)
    return (
        f"{_DAYS[moment.weekday()]}, {moment.day:02d} {_MONTHS[moment.month - 1]} "
        f"{moment.year:04d} {moment.hour:02d}:{moment.minute:02d}:{moment.second:02d} +0000"
    )


def _message_id_line(message_id: str) -> bytes:
    return f"Message-ID: {message_id}\r\n".encode("ascii")


def _header_line(name: str, value: str) -> bytes:
    """The ``name`` header of ``value`` as the email package writes it (SMTP policy)."""
    return _header_class(name)(name, value).fold(policy=SMTP).encode("ascii")


_HEADER_CLASSES: dict[str, type[BaseHeader]] = {}


def _header_class(name: str) -> type[BaseHeader]:
    """The email package's header class for ``name``, made once: its
    ``HeaderRegistry`` creates a new class on every lookup (~0.1 ms)."""
    key = name.lower()
    cls = _HEADER_CLASSES.get(key)
    if cls is None:
        cls = _HEADER_CLASSES[key] = cast(HeaderRegistry, SMTP.header_factory)[key]
    return cls


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
    return _recipient(message)[0]


def _recipient(message: AccountEmail) -> tuple[Address, bytes]:
    """``recipient(message)`` and its To header line, as checked (``_folded``)."""
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
    except ValueError:
        raise RenderError("email: not exactly one valid address") from None
    line = _plain_line("To", name, checked.ascii_email) or _folded("To", address)
    if line is not None:
        return address, line
    # The name would not read back as written. The stdlib decodes what looks
    # like an RFC 2047 encoded word while folding: "=?utf-8?q?Ada=0D=0ABcc:...?="
    # is printable ASCII, valid for the contract, and comes out as a raw line
    # break and a Bcc header. The name is cosmetic in the To header (the body
    # still greets it, escaped): the email goes to the bare address instead.
    log.warning("email.display_name_dropped", reason="it does not read back from the header")
    try:
        bare = Address(addr_spec=checked.ascii_email)
    except ValueError:
        raise RenderError("email: not exactly one valid address") from None
    line = _folded("To", bare)
    if line is not None:
        return bare, line
    raise RenderError("email: the address does not survive its header")


def _plain_line(name: str, display_name: str, addr_spec: str) -> bytes | None:
    """The header line ``_folded`` makes for a name of plain words (ASCII letters,
    digits, ``'`` and ``-``, single spaces) and a dot-atom address, when it fits
    on one line: the email package writes such a name and address verbatim
    (nothing to quote, encode or fold, no ``=?`` to decode) and parses them
    back as they are. ``None`` for anything else."""
    line = f"{name}: {display_name} <{addr_spec}>"
    if (
        len(line) <= _MAX_LINE
        and _PLAIN_NAME.fullmatch(display_name)
        and _PLAIN_ADDRESS.fullmatch(addr_spec)
    ):
        return f"{line}\r\n".encode("ascii")
    return None


def reads_back(name: str, address: Address) -> bool:
    """Whether the ``name`` header of ``address``, as written on the wire, is one
    ASCII header line (folded, no other line break or control character) that
    a mail client parses back into exactly ``address``."""
    return _folded(name, address) is not None


def _folded(name: str, address: Address) -> bytes | None:
    """The ``name`` header of ``address`` as the email package writes it (SMTP
    policy, CRLF-ended), if it reads back (``reads_back``); else ``None``."""
    header_class = _header_class(name)
    # Made from the Address, the header is folded from the parse of its text,
    # str(address), and that parse is dropped; made from the text, it folds
    # the same and keeps the parse (see below). The text's addresses can fail
    # to form (a name hiding an encoded line break): then from the Address.
    decoded = str(address)
    try:
        header = header_class(name, decoded)
    except ValueError:
        header, decoded = header_class(name, address), ""
    try:
        raw = header.fold(policy=SMTP).encode("ascii")
    except (UnicodeEncodeError, ValueError):
        return None
    unfolded = _FOLD.sub(b"", raw.removesuffix(b"\r\n"))
    if _CONTROL.search(unfolded):
        return None
    # With no line break left but the folds, a parser sees this one header and
    # nothing else; its value is parsed as a mail client's parser would. When
    # the wire shows the text verbatim (nothing quoted or encoded), that parse
    # is the one just made.
    value = unfolded.decode("ascii").partition(":")[2].lstrip(" \t")
    try:
        parsed = header if value == decoded else header_class(name, value)
        addresses = parsed.addresses if isinstance(parsed, AddressHeader) else ()
    except Exception:
        # The stdlib parser reports most garbage as defects but crashes on some.
        return None
    if (
        len(addresses) == 1
        and addresses[0].addr_spec == address.addr_spec
        # Folding may collapse runs of whitespace; nothing else may change.
        and _spaced(addresses[0].display_name) == _spaced(address.display_name)
    ):
        return raw
    return None


def _spaced(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _ascii_domain(domain: str) -> str:
    # Message-ID must be ASCII; an internationalised From domain goes in its
    # IDNA form.
    return domain.encode("idna").decode("ascii")
