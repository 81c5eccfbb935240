"""``BrandSettings``: how Herald names and colours itself to the people it writes to.

The notifier (emails) and the API (the link pages) read the same variables
(``HERALD_BRAND_*``), so an email and the page its link opens look alike. A
service's ``Settings`` lists ``BrandSettings`` among its bases; ``brand``
gives the validated values as one ``Brand``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import AfterValidator, EmailStr, Field, HttpUrl, StringConstraints
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DEFAULT_ACCENT", "Brand", "BrandSettings"]

DEFAULT_ACCENT = "#2f5bea"
"""Herald's blue: white text on it passes WCAG AA (contrast above 4.5:1)."""


def _https(url: HttpUrl | None) -> HttpUrl | None:
    if url is not None and url.scheme != "https":
        raise ValueError("must be an https:// URL (mail clients block or warn on http images)")
    return url


BrandName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=60, pattern=r"^[^<>\r\n]+$"),
]
AccentColour = Annotated[
    str,
    StringConstraints(strip_whitespace=True, to_lower=True, pattern=r"^#[0-9a-fA-F]{6}$"),
]


@dataclass(frozen=True, slots=True)
class Brand:
    """The brand as the templates use it."""

    name: str
    support_email: str | None
    accent: str
    logo_url: str | None


class BrandSettings(BaseSettings):
    """The ``HERALD_BRAND_*`` variables (a base of the API's and the notifier's ``Settings``)."""

    model_config = SettingsConfigDict(
        env_prefix="HERALD_", extra="ignore", hide_input_in_errors=True
    )

    brand_name: BrandName = Field(
        default="Herald",
        description="Product name in every email and link page (subjects, greetings, footers, "
        "page titles). The sender's name is HERALD_MAIL_FROM's.",
    )
    brand_support_email: EmailStr | None = Field(
        default=None,
        description='Address emails and pages name for help ("Questions? Write to ..."); '
        "unset: they name none.",
    )
    brand_accent: AccentColour = Field(
        default=DEFAULT_ACCENT,
        description="Colour of buttons and links, as #rrggbb; pick one that white text reads "
        "on (WCAG contrast 4.5:1).",
    )
    brand_logo_url: Annotated[HttpUrl | None, AfterValidator(_https)] = Field(
        default=None,
        description="https:// URL of a logo image (about 120x40 px) shown atop emails and "
        "pages; unset: the product name in text. Emails read well with images blocked.",
    )

    @property
    def brand(self) -> Brand:
        """The validated brand."""
        return Brand(
            name=self.brand_name,
            support_email=self.brand_support_email,
            accent=self.brand_accent,
            logo_url=None if self.brand_logo_url is None else str(self.brand_logo_url),
        )
