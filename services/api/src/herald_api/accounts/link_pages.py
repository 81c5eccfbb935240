"""The pages emailed links open, rendered once per language at startup.

Each page is static per locale (no request data goes into it), so the HTML of
every (page, locale) pair, the stylesheet and the headers are built when the app
starts: a request only picks one. Texts are Babel gettext catalogues
(``accounts/locales``, domain ``messages``) through Jinja2's i18n extension;
the scripts are static files inlined and allowed by their hash, and they show
only texts the HTML already holds (pre-rendered, translated), so they never
need a catalogue.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from importlib.resources import files
from typing import Final, Literal
from urllib.parse import urlsplit

from babel.support import Translations
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from herald_shared.brand import Brand
from herald_shared.locales import LOCALES

__all__ = ["STYLESHEET_PATH", "LinkPages", "PageName", "Rendered"]

PageName = Literal["verify-email", "reset-password"]
PAGES: Final[tuple[PageName, ...]] = ("verify-email", "reset-password")
STYLESHEET_PATH: Final = "/pages/herald.css"
DOMAIN: Final = "messages"
_DARK_CARD = (0x1C, 0x21, 0x2B)
"""The dark scheme's card colour (herald.css), which links must read on."""


def translations(locale: str) -> Translations:
    """The compiled catalogue of ``locale`` (``NullTranslations`` for English, the
    source language, or when no ``.mo`` was built)."""
    folder = files("herald_api.accounts") / "locales"
    loaded = Translations.load(str(folder), [locale], domain=DOMAIN)
    return loaded if isinstance(loaded, Translations) else Translations()


def environment(locale: str) -> Environment:
    """A Jinja2 environment of the page templates speaking ``locale``."""
    env = Environment(
        loader=PackageLoader("herald_api.accounts", "pages"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        extensions=["jinja2.ext.i18n"],
        trim_blocks=False,
    )
    env.install_gettext_translations(translations(locale), newstyle=True)  # type: ignore[attr-defined]
    return env


def _relative_luminance(rgb: tuple[int, int, int]) -> float:
    def channel(value: int) -> float:
        c = value / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    red, green, blue = (channel(value) for value in rgb)
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue


def _contrast(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    lighter, darker = sorted((_relative_luminance(a), _relative_luminance(b)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


def dark_link_colour(accent: str) -> str:
    """``accent`` lightened (mixed with white) until it reads on the dark card with a
    WCAG AA contrast of 4.5:1: the accent itself is chosen to read on white."""
    rgb = tuple(int(accent[i : i + 2], 16) for i in (1, 3, 5))
    for step in range(11):
        share = step / 10
        mixed = tuple(round(c + (255 - c) * share) for c in rgb)
        if _contrast((mixed[0], mixed[1], mixed[2]), _DARK_CARD) >= 4.5:
            break
    return "#{:02x}{:02x}{:02x}".format(*mixed)


def stylesheet(brand: Brand) -> str:
    """``herald.css`` with the brand's accent (and its dark-scheme link colour)."""
    base = (files("herald_api.accounts") / "pages" / "herald.css").read_text(encoding="utf-8")
    accent = (
        f":root {{\n  --accent: {brand.accent};\n}}\n\n"
        f"@media (prefers-color-scheme: dark) {{\n  :root {{\n"
        f"    --link: {dark_link_colour(brand.accent)};\n  }}\n}}\n\n"
    )
    return accent + base


def _sha256_base64(text: str) -> str:
    return base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode()


def content_security_policy(*, script: str, logo_url: str | None) -> str:
    """Only the page's own script runs, only the API's stylesheet applies, only the
    brand's logo loads, and the script may talk to this origin only."""
    if logo_url is None:
        images = "'none'"
    else:
        parts = urlsplit(logo_url)
        images = f"{parts.scheme}://{parts.netloc}"
    return (
        f"default-src 'none'; script-src 'sha256-{_sha256_base64(script)}'; "
        f"style-src 'self'; img-src {images}; connect-src 'self'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    )


@dataclass(frozen=True, slots=True)
class Rendered:
    """A page or the stylesheet, ready to send."""

    body: str
    headers: dict[str, str]


@dataclass(frozen=True)
class LinkPages:
    """Every link page in every locale, and the stylesheet, for one brand."""

    pages: dict[tuple[PageName, str], Rendered]
    css: Rendered

    @classmethod
    def build(cls, brand: Brand) -> LinkPages:
        css = stylesheet(brand)
        css_version = _sha256_base64(css)[:16].replace("/", "_").replace("+", "-")
        css_headers = {
            "Cache-Control": "public, max-age=86400",
            "ETag": f'"{css_version}"',
            "X-Content-Type-Options": "nosniff",
        }
        folder = files("herald_api.accounts") / "pages"
        pages: dict[tuple[PageName, str], Rendered] = {}
        for locale in LOCALES:
            env = environment(locale)
            for name in PAGES:
                script = (folder / f"{name}.js").read_text(encoding="utf-8")
                html = env.get_template(f"{name}.html.j2").render(
                    locale=locale,
                    brand=brand,
                    script=script,
                    stylesheet=f"{STYLESHEET_PATH}?v={css_version}",
                )
                headers = {
                    "Content-Security-Policy": content_security_policy(
                        script=script, logo_url=brand.logo_url
                    ),
                    "Content-Language": locale,
                    "Vary": "Accept-Language",
                    "Referrer-Policy": "no-referrer",
                    "Cache-Control": "no-store",
                    "X-Content-Type-Options": "nosniff",
                }
                pages[name, locale] = Rendered(body=html, headers=headers)
        return cls(pages=pages, css=Rendered(body=css, headers=css_headers))

    def page(self, name: PageName, locale: str) -> Rendered:
        """``name`` in ``locale`` (one of ``LOCALES``)."""
        return self.pages[name, locale]
