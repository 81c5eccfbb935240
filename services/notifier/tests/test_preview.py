"""``herald-notifier preview``: sample emails for a designer, with nothing configured."""

from __future__ import annotations

import email
import email.policy
import os
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path

import pytest

from herald_notifier.catalogue import SUBJECTS
from herald_shared.locales import LOCALES


def preview(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m herald_notifier preview ARGS`` with no HERALD_* variable but ``env``
    (and no Redis or relay reachable: nothing to connect to)."""
    clean = {name: value for name, value in os.environ.items() if not name.startswith("HERALD_")}
    clean["HERALD_REDIS_URL"] = "redis://127.0.0.1:1/0"
    return subprocess.run(
        [sys.executable, "-m", "herald_notifier", "preview", *args],
        cwd=cwd,
        env=clean | env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def parsed(path: Path) -> EmailMessage:
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def test_preview_writes_the_eml_and_the_html_of_a_kind_in_a_locale(tmp_path: Path) -> None:
    out = tmp_path / "previews"

    done = preview("password_reset", "--locale", "de", "--out", str(out), cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    eml, html = out / "password_reset.de.eml", out / "password_reset.de.html"
    assert done.stdout.splitlines() == [str(eml), str(html)]
    message = parsed(eml)
    assert message["Subject"] == "Setze dein Herald-Passwort zurück"
    assert message["To"] == "Ada Lovelace <ada@example.com>"
    part = message.get_body(("html",))
    assert part is not None
    # The HTML part, with the line endings of a file rather than of SMTP.
    assert html.read_text(encoding="utf-8") == part.get_content().replace("\r\n", "\n")
    assert '<html lang="de" dir="ltr">' in html.read_text(encoding="utf-8")
    # A sample link to the default page, in the reader's language.
    text = message.get_body(("plain",))
    assert text is not None
    assert "http://localhost:8000/reset-password?lang=de#token=" in text.get_content()


def test_preview_all_writes_every_kind_in_every_locale(tmp_path: Path) -> None:
    done = preview("all", "--out", "previews", cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    expected = {
        f"{kind}.{locale}.{suffix}"
        for kind in SUBJECTS
        for locale in LOCALES
        for suffix in ("eml", "html")
    }
    assert {path.name for path in (tmp_path / "previews").iterdir()} == expected
    assert "verification_reminder.es.eml" in expected


def test_preview_shows_the_brand_of_the_environment(tmp_path: Path) -> None:
    done = preview(
        "welcome",
        "--locale",
        "es",
        "--out",
        str(tmp_path),
        cwd=tmp_path,
        HERALD_BRAND_NAME="Acme",
        HERALD_BRAND_SUPPORT_EMAIL="help@acme.example.org",
        HERALD_MAIL_FROM="Acme <hola@acme.example.org>",
    )

    assert done.returncode == 0, done.stderr
    message = parsed(tmp_path / "welcome.es.eml")
    assert message["Subject"] == "Te damos la bienvenida a Acme"
    assert message["From"] == "Acme <hola@acme.example.org>"
    text = message.get_body(("plain",))
    assert text is not None
    assert "¿Preguntas? Escribe a help@acme.example.org." in text.get_content()


@pytest.mark.parametrize(
    ("args", "complaint"),
    [(("nonsense",), "invalid choice: 'nonsense'"), (("welcome", "--locale", "fr"), "'fr'")],
)
def test_preview_refuses_an_unknown_kind_or_locale(
    tmp_path: Path, args: tuple[str, ...], complaint: str
) -> None:
    done = preview(*args, cwd=tmp_path)

    assert done.returncode == 2
    assert complaint in done.stderr
    assert list(tmp_path.iterdir()) == []
