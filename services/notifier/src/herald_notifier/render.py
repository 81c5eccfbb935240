"""Turn queue messages into ready-to-send emails, in their reader's language.

Each email is an ``email.message.EmailMessage`` built with the SMTP policy
(``POLICY``): From, To (the recipient checked, ``recipient``), the subject,
Date, a deterministic Message-ID, and a text and an HTML alternative from the
email's templates (``herald_notifier.catalogue``; HTML autoescaped), both
quoted-printable. The email package encodes every header (RFC 2047 for
non-ASCII names and subjects) and refuses line breaks in them; the To header
is also checked to read back as exactly its one mailbox.

Language: the message's ``locale`` resolved to one of ``LOCALES``
(``herald_shared.locales.resolve``; messages from before locales mean
English). Subjects, bodies and dates come from that locale's gettext
catalogue (``locales/``, compiled to ``.mo`` by the build) through one Jinja2
environment per locale, made once per renderer. The HTML part is one layout
(``templates/_layout.html.j2``) styled by ``templates/email.css``, which
css-inline copies into style attributes at render; the brand
(``HERALD_BRAND_*``) names, colours and signs every email.

The link (``{page}?lang={locale}#token={token}``) exists only inside the
rendered email: no exception raised here can contain it (the recipient is
checked before the link is made, and ``RenderError`` messages are fixed
text). Why the emails are built this way, and what it costs: docs/notifier.md
("Rendering", "Emails people read").
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from email import message_from_bytes
from email.headerregistry import Address, AddressHeader
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import css_inline
import structlog
from babel.support import NullTranslations, Translations
from email_validator import EmailNotValidError, validate_email
from jinja2 import Environment, PackageLoader, StrictUndefined, Template, select_autoescape
from markupsafe import Markup
from pydantic import SecretStr

from herald_notifier.catalogue import CATALOGUE, format_time, kind_of
from herald_shared.brand import Brand, BrandSettings
from herald_shared.locales import DEFAULT_LOCALE, LOCALES, resolve
from herald_shared.messages import AccountEmail, EmailLink, Message
from herald_shared.tokens import Purpose, derive

__all__ = [
    "DEFAULT_BRAND",
    "LOCALE_DIR",
    "POLICY",
    "RenderError",
    "RenderedEmail",
    "Renderer",
    "load_translations",
    "recipient",
]

POLICY = SMTP.clone(max_line_length=76)
"""The SMTP policy (CRLF line endings), with lines of at most 76 characters:
RFC 2045's limit for quoted-printable bodies (the SMTP policy allows 78)."""

_FOLD = re.compile(r"\r\n(?=[ \t])")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_UNPRINTABLE = {"Cc", "Cf", "Zl", "Zp", "Cs"}

LOCALE_DIR = Path(__file__).parent / "locales"
"""The gettext catalogues: ``{locale}/LC_MESSAGES/messages.po`` (committed) and
``.mo`` (compiled by the build's hatch-babel hook)."""

DEFAULT_BRAND = BrandSettings.model_construct().brand
"""The brand of ``BrandSettings``' defaults (not read from the environment)."""

_CSS_COMMENT = re.compile(r"/\*.*?\*/", re.DOTALL)

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
        parsed = message_from_bytes(self.data, policy=POLICY)
        assert isinstance(parsed, EmailMessage)
        return parsed


class _Content(NamedTuple):
    """What an email says: its template, its language, its subject (translated),
    and what its template is given besides the display name, which every email
    greets."""

    template: str
    locale: str
    subject: str
    context: dict[str, Any]


class _Language(NamedTuple):
    """One supported locale's catalogue and compiled templates (text, HTML) by name."""

    translations: NullTranslations
    templates: dict[str, tuple[Template, Template]]


def load_translations(locale: str) -> NullTranslations:
    """The compiled catalogue of ``locale`` (one of ``LOCALES``); English, the
    source language, needs none.

    Raises ``RuntimeError`` if another locale's ``.mo`` is missing (an install
    that skipped the build hook): such a notifier would send English while
    claiming another language.
    """
    translations = Translations.load(LOCALE_DIR, [locale], domain="messages")
    if locale != DEFAULT_LOCALE and not isinstance(translations, Translations):
        raise RuntimeError(
            f"no compiled catalogue for {locale!r} in {LOCALE_DIR}: the package was installed "
            "without its build hook (hatch-babel compiles the .po files)"
        )
    return translations


class Renderer:
    """Renders the catalogue's emails from the package's Jinja2 templates, in
    every locale of ``LOCALES``, compiled once per instance."""

    def __init__(
        self,
        sender: Address,
        *,
        link_secret: SecretStr,
        verify_url: str,
        reset_url: str,
        brand: Brand = DEFAULT_BRAND,
    ) -> None:
        if not _reads_back("From", sender):
            raise ValueError("the sender (HERALD_MAIL_FROM) does not read back from its header")
        self.sender = sender
        self._message_id_domain = _ascii_domain(sender.domain)
        self._envelope_sender = Address(
            username=sender.username, domain=self._message_id_domain
        ).addr_spec
        self._link_secret = link_secret
        self._pages: dict[Purpose, str] = {
            "verify_email": verify_url,
            "reset_password": reset_url,
            # The verify page posts either token to the API's verify endpoint.
            "change_email": verify_url,
        }
        self.brand = brand
        self._languages = {locale: self._language(locale) for locale in LOCALES}
        # The stylesheet is the brand's: rendered once, trusted (it is the package's).
        stylesheet = _environment(NullTranslations()).get_template("email.css")
        inlined, media_queries = split_stylesheet(stylesheet.render(accent=brand.accent))
        # The package's own CSS, in the head's <style>: trusted, not escaped.
        self._media_queries = Markup(media_queries)  # noqa: S704
        self._inliner = css_inline.CSSInliner(
            # The <style> of the head stays, for its @media blocks; the rest
            # of the stylesheet goes into style attributes. Nothing is fetched.
            keep_style_tags=True,
            load_remote_stylesheets=False,
            extra_css=inlined,
        )

    def _language(self, locale: str) -> _Language:
        """``locale``'s catalogue and templates."""
        translations = load_translations(locale)
        env = _environment(translations)
        templates = {
            kind.template: (
                env.get_template(f"{kind.template}.txt.j2"),
                env.get_template(f"{kind.template}.html.j2"),
            )
            for kind in CATALOGUE
        }
        return _Language(translations, templates)

    def __repr__(self) -> str:
        # The link secret is a SecretStr already; the pages are all worth showing.
        return (
            f"Renderer(sender={self.sender!r}, verify_url={self._pages['verify_email']!r}, "
            f"reset_url={self._pages['reset_password']!r})"
        )

    def render(self, message: AccountEmail, *, now: datetime | None = None) -> RenderedEmail:
        """The email of ``message`` (any message of ``CATALOGUE``), ready for the relay,
        dated ``now`` (default: the current time).

        Raises ``RenderError`` if the recipient cannot form a safe header (e.g.
        a line break in the display name of an unvalidated message).
        """
        # The recipient is checked before the content, and so the link, is made:
        # no RenderError can quote the link.
        to = recipient(message)
        content = self._content(message)
        text, html = self._bodies(
            content.template,
            content.locale,
            {"display_name": message.display_name, "subject": content.subject, **content.context},
        )
        message_id = self.message_id(message)
        email = EmailMessage(policy=POLICY)
        email["From"] = self.sender
        email["To"] = to
        email["Subject"] = content.subject
        email["Date"] = now or datetime.now(UTC)
        email["Message-ID"] = message_id
        # Quoted-printable keeps non-ASCII names intact through relays without
        # 8BITMIME, and keeps the long link lines under SMTP's line limit.
        email.set_content(text, cte="quoted-printable")
        email.add_alternative(html, subtype="html", cte="quoted-printable")
        return RenderedEmail(
            sender=self._envelope_sender,
            recipient=to.addr_spec,
            message_id=message_id,
            data=email.as_bytes(),
        )

    def link_url(self, link: EmailLink, purpose: Purpose, *, locale: str = DEFAULT_LOCALE) -> str:
        """The URL ``link`` opens: the page of ``purpose`` (``reset_url`` for
        ``reset_password``, else ``verify_url``) in ``locale`` (``lang``, added to
        the page's own query, replacing a ``lang`` it has), with the token
        derived for ``purpose`` in its fragment."""
        token = derive(self._link_secret, token_id=link.token_id, purpose=purpose)
        page = urlsplit(self._pages[purpose])
        query = [(key, value) for key, value in parse_qsl(page.query) if key != "lang"]
        query.append(("lang", resolve(locale)))
        return urlunsplit(page._replace(query=urlencode(query), fragment=f"token={token}"))

    def message_id(self, message: Message) -> str:
        """The Message-ID header of ``message``'s email: the same on every attempt,
        so a mail client can collapse a duplicate delivery."""
        return f"<{message.message_id}@{self._message_id_domain}>"

    def _content(self, message: AccountEmail) -> _Content:
        """What ``message``'s email says, from its row of the catalogue. It makes
        the link: call it once the recipient is checked."""
        kind = kind_of(message)
        locale = resolve(message.reader_locale)
        # A time in the row's context is said in the reader's language.
        context = {
            name: format_time(value, locale=locale) if isinstance(value, datetime) else value
            for name, value in kind.context(message).items()
        }
        if kind.purpose is not None:
            link = kind.link_of(message)
            context["link"] = (
                None if link is None else self.link_url(link, kind.purpose, locale=locale)
            )
            if link is not None:
                context["expires"] = format_time(link.expires_at, locale=locale)
        subject = self.subject(kind.subject_of(message), locale)
        return _Content(kind.template, locale, subject, context)

    def subject(self, source: str, locale: str) -> str:
        """The subject ``source`` (a catalogue row's) in ``locale``, the brand filled in."""
        translated = self._languages[locale].translations.gettext(source)
        return translated % {"product": self.brand.name}

    def _bodies(self, name: str, locale: str, context: dict[str, Any]) -> tuple[str, str]:
        """The text and HTML bodies of template ``name`` in ``locale``; the HTML
        with email.css inlined."""
        text, html = self._languages[locale].templates[name]
        shared = {
            "lang": locale,
            "brand": self.brand,
            "product": self.brand.name,
            "media_queries": self._media_queries,
            **context,
        }
        # Ended by a line break, as the email package would end it.
        inlined = self._inliner.inline(html.render(shared)).rstrip("\n") + "\n"
        return text.render(shared), inlined


def split_stylesheet(css: str) -> tuple[str, str]:
    """``css`` without comments, split into its plain rules (to inline) and its
    ``@media`` blocks (for the head's ``<style>``: a style attribute cannot hold
    a media query)."""
    plain: list[str] = []
    media: list[str] = []
    rest = _CSS_COMMENT.sub("", css)
    while (start := rest.find("@media")) != -1:
        plain.append(rest[:start])
        depth, opening = 0, rest.index("{", start)
        for end in range(opening, len(rest)):
            depth += {"{": 1, "}": -1}.get(rest[end], 0)
            if depth == 0:
                break
        else:
            raise ValueError("email.css: an @media block is not closed")
        media.append(rest[start : end + 1])
        rest = rest[end + 1 :]
    plain.append(rest)
    return _tidy("".join(plain)), "\n".join(_tidy(block) for block in media)


def _tidy(css: str) -> str:
    return "\n".join(line.rstrip() for line in css.strip().splitlines() if line.strip())


def _environment(translations: NullTranslations) -> Environment:
    """A Jinja2 environment of the package's templates speaking ``translations``
    (newstyle gettext: ``_("Hello %(name)s", name=...)``, autoescaped in HTML)."""
    env = Environment(
        loader=PackageLoader("herald_notifier", "templates"),
        autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
        undefined=StrictUndefined,
        # Block tags on lines of their own leave no blank lines behind.
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        extensions=["jinja2.ext.i18n"],
    )
    # {% trans %} blocks collapse their whitespace: the msgids are one line each
    # (babel.cfg extracts with the same option).
    env.policies["ext.i18n.trimmed"] = True
    env.install_gettext_translations(translations, newstyle=True)  # type: ignore[attr-defined]
    return env


def recipient(message: AccountEmail) -> Address:
    """The To mailbox of ``message``, refusing anything that could add or split a
    header or a recipient.

    A decoded message has passed these checks already (``DisplayName``,
    ``EmailStr``); they are repeated because ``model_construct`` and
    ``model_copy(update=...)`` skip validation. ``Address`` refuses CR and LF
    only, and the email package writes other control characters (NUL, VT...)
    raw into the header, so those are refused here.

    The address goes out in its ASCII form: an internationalised domain as
    IDNA 2008 punycode (the email package would write it as an encoded word,
    which no relay can route). A non-ASCII local part would need SMTPUTF8,
    which the notifier does not use: such an address is refused.
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
    if _reads_back("To", address):
        return address
    # The email package decodes what looks like an RFC 2047 encoded word while
    # folding: "=?utf-8?q?Ada=0D=0ABcc:...?=" is printable ASCII and comes out
    # as a raw line break and a Bcc header. The name is cosmetic in the To
    # header (the body still greets it, escaped): the email goes to the bare
    # address instead.
    log.warning("email.display_name_dropped", reason="it does not read back from the header")
    if _reads_back("To", bare):
        return bare
    raise RenderError("email: the address does not survive its header")


def _reads_back(name: str, address: Address) -> bool:
    """Whether the ``name`` header of ``address``, as ``POLICY`` writes it, is one
    ASCII header line (folded, no other line break or control character) that
    a mail client parses back into exactly ``address``."""
    try:
        header = POLICY.header_factory(name, address)
        line = header.fold(policy=POLICY)
        line.encode("ascii")
    except (UnicodeEncodeError, ValueError):
        return False
    unfolded = _FOLD.sub("", line.removesuffix("\r\n"))
    if _CONTROL.search(unfolded):
        return False
    try:
        parsed = POLICY.header_factory(name, unfolded.partition(":")[2].lstrip(" \t"))
        addresses = parsed.addresses if isinstance(parsed, AddressHeader) else ()
    except Exception:
        # The email package's parser reports most garbage as defects but crashes on some.
        return False
    return (
        len(addresses) == 1
        and addresses[0].addr_spec == address.addr_spec
        # Folding may collapse runs of whitespace; nothing else may change.
        and _spaced(addresses[0].display_name) == _spaced(address.display_name)
    )


def _spaced(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _ascii_domain(domain: str) -> str:
    # Message-ID must be ASCII; an internationalised From domain goes in its
    # IDNA form.
    return domain.encode("idna").decode("ascii")
