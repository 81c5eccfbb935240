"""The strict browser page fails a test on what a person's console would show.

A tiny local HTTP server serves pages that misbehave one way each (a
``console.error``, an uncaught error, an inline style the CSP blocks, an error
answer); a pytest run in a subprocess drives them through the ``page`` fixture
in Debian's Chromium, and its JUnit report says which tests failed and why.
Also: no Chromium stops ``make e2e`` before it starts anything, saying how to
install one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from herald_testing import browser, preflight

STRICT_CSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'"
SCRIPTS = {
    "/clean.js": "document.body.dataset.done = 'yes';",
    "/console-error.js": "console.error('boom from the page'); document.body.dataset.done = 'yes';",
    "/script-error.js": (
        "document.body.dataset.done = 'yes'; throw new Error('unhandled from the page');"
    ),
    "/weak-password.js": (
        "fetch('/api/password', {method: 'POST'})"
        ".then(() => { document.body.dataset.done = 'yes'; });"
    ),
}
PAGES = {
    "/clean": '<link rel="stylesheet" href="/style.css"><p>fine</p>',
    "/console-error": "<p>logs an error</p>",
    "/script-error": "<p>throws</p>",
    "/csp-violation": '<p style="color: red">styled inline, which the CSP forbids</p>',
    "/weak-password": "<p>gets a 422</p>",
}


class Site(BaseHTTPRequestHandler):
    """Each page under the strict CSP, with its script (named after it) as a file."""

    def do_GET(self) -> None:
        if self.path in PAGES:
            script = (
                f'<script src="{self.path}.js"></script>' if self.path != "/csp-violation" else ""
            )
            done = ' data-done="yes"' if self.path == "/csp-violation" else ""
            self._answer(
                200,
                "text/html",
                f"<!doctype html><html lang='en'><head><title>t</title></head>"
                f"<body{done}>{PAGES[self.path]}{script}</body></html>",
            )
        elif self.path in SCRIPTS:
            self._answer(200, "text/javascript", SCRIPTS[self.path])
        elif self.path == "/style.css":
            self._answer(200, "text/css", "p { color: #333; }")
        else:
            self._answer(404, "text/plain", "not here")

    def do_POST(self) -> None:
        self._answer(422, "application/json", '{"detail": "too short"}')

    def _answer(self, status: int, content_type: str, body: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", f"{content_type}; charset=utf-8")
        self.send_header("Content-Security-Policy", STRICT_CSP)
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


SUITE = """
import os

from herald_testing.browser import PageWatch, browser_context, page, page_watch  # noqa: F401

SITE = os.environ["HERALD_TEST_SITE"]


async def visit(page, path):
    await page.goto(SITE + path)
    await page.wait_for_selector("body[data-done=yes]")


async def test_clean(page):
    await visit(page, "/clean")


async def test_console_error(page):
    await visit(page, "/console-error")


async def test_script_error(page):
    await visit(page, "/script-error")


async def test_csp_violation(page):
    await visit(page, "/csp-violation")


async def test_error_answer_not_declared(page):
    await visit(page, "/weak-password")


async def test_error_answer_declared(page_watch: PageWatch):
    page_watch.allow_failed_response(path="/api/password", status=422)
    await visit(page_watch.page, "/weak-password")
"""


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Site)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def outcomes(site: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Each test of SUITE: "passed", or why it failed (its error or failure message)."""
    if (problem := browser.chromium_problem()) is not None:
        pytest.fail(problem)
    root = tmp_path_factory.mktemp("strict-page")
    (root / "test_pages.py").write_text(SUITE, encoding="utf-8")
    report = root / "report.xml"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(root),
            "-p",
            "no:cacheprovider",
            "-p",
            "no:cloudcoil",
            "-o",
            "asyncio_mode=auto",
            "-o",
            "asyncio_default_fixture_loop_scope=session",
            "-o",
            "asyncio_default_test_loop_scope=session",
            f"--junitxml={report}",
        ],
        env=dict(os.environ) | {"HERALD_TEST_SITE": site},
        cwd=root,
        capture_output=True,
        check=False,
        timeout=120,
    )
    results: dict[str, str] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        trouble = [child for child in case if child.tag in ("error", "failure")]
        results[case.attrib["name"]] = (
            " ".join(f"{t.get('message', '')} {t.text or ''}" for t in trouble) or "passed"
        )
    return results


def test_a_page_that_shows_no_problem_passes(outcomes: dict[str, str]) -> None:
    assert outcomes["test_clean"] == "passed"


def test_a_console_error_fails_the_test_with_its_message(outcomes: dict[str, str]) -> None:
    assert "console error: boom from the page" in outcomes["test_console_error"]


def test_an_uncaught_script_error_fails_the_test(outcomes: dict[str, str]) -> None:
    assert "uncaught script error" in outcomes["test_script_error"]
    assert "unhandled from the page" in outcomes["test_script_error"]


def test_a_csp_violation_fails_the_test_naming_the_directive(outcomes: dict[str, str]) -> None:
    assert "CSP violation: style-src-attr blocked inline" in outcomes["test_csp_violation"]


def test_an_error_answer_fails_unless_the_test_declares_it(outcomes: dict[str, str]) -> None:
    assert "status of 422" in outcomes["test_error_answer_not_declared"]
    assert outcomes["test_error_answer_declared"] == "passed"


def test_no_chromium_names_the_debian_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(browser.CHROMIUM_ENV, raising=False)
    monkeypatch.setattr(browser, "DEBIAN_CHROMIUM", "/nonexistent/chromium")
    assert preflight.e2e_browser() == [browser.CHROMIUM_MISSING]
    assert "install Debian's chromium: sudo apt-get install chromium" in browser.CHROMIUM_MISSING


def test_make_e2e_without_chromium_stops_before_starting_anything(tmp_path: Path) -> None:
    missing = tmp_path / "chromium"
    result = subprocess.run(
        [sys.executable, "-m", "herald_testing.stack", "e2e", "--stack", "local"],
        env=dict(os.environ) | {browser.CHROMIUM_ENV: str(missing)},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 1
    assert f"{browser.CHROMIUM_ENV}={missing} is not an executable file" in result.stderr
    assert "install Debian's chromium: sudo apt-get install chromium" in result.stderr
    assert "[stack]" not in result.stdout + result.stderr  # nothing was started


@pytest.fixture(scope="module")
def installed_chromium_version() -> str:
    """What the system's Chromium says it is (``chromium --version``)."""
    binary = browser.chromium_binary()
    assert binary is not None, browser.CHROMIUM_MISSING
    return subprocess.run(
        [binary, "--version"], capture_output=True, text=True, check=True, timeout=30
    ).stdout


async def test_the_browser_driven_is_the_systems_chromium(installed_chromium_version: str) -> None:
    installed = installed_chromium_version
    async with browser.launch_chromium() as context:
        assert context.browser is not None
        assert context.browser.version in installed  # not a browser Playwright downloaded


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    header = path.read_bytes()[16:24]
    return int.from_bytes(header[:4], "big"), int.from_bytes(header[4:], "big")


async def test_screenshots_go_to_the_logs_and_the_docs_folder_at_both_sizes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(browser.LOG_DIR_ENV, str(tmp_path / "logs"))
    monkeypatch.setenv(browser.SCREENSHOTS_ENV, str(tmp_path / "docs"))
    async with browser.launch_chromium() as context:
        page = await context.new_page()
        await page.set_content("<p>a page</p>")
        written = await browser.save_screenshots(page, "verify-email.ready")
        assert page.viewport_size == browser.DESKTOP.size()  # given back as it was

    expected = {
        folder / f"verify-email.ready.{name}.png"
        for folder in (tmp_path / "logs" / "screenshots", tmp_path / "docs")
        for name in ("desktop", "phone")
    }
    assert set(written) == expected
    for path in expected:
        width, height = png_size(path)
        viewport = browser.DESKTOP if ".desktop." in path.name else browser.PHONE
        assert (width, height) == (viewport.width, viewport.height)
