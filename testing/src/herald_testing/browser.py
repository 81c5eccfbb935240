"""A real browser for the tests: Debian's Chromium driven by Playwright.

Playwright comes from PyPI; the browser is the system's (``$HERALD_CHROMIUM``,
else ``/usr/bin/chromium`` from Debian's ``chromium`` package), never one that
``playwright install`` downloads. Each run gets a new, empty profile directory.

A *strict* page fails its test on anything a person's browser would log as
broken: a console error, an uncaught script error (``pageerror``), or a
Content-Security-Policy violation (reported by an init script's
``securitypolicyviolation`` listener, so a blocked inline style counts even if
the browser logged nothing). An error answer the test provokes on purpose (a
spent link's ``400``, a weak password's ``422``) is declared with
:meth:`PageWatch.allow_failed_response`; Chromium logs every 4xx it fetches.

Fixtures (import them into a ``conftest.py``): ``browser_context`` (session),
``page_watch`` (a strict page and what it saw) and ``page`` (its page).
``save_screenshots`` writes a page at desktop and phone size into
``$HERALD_E2E_LOG_DIR/screenshots/`` and, when set, ``$HERALD_SCREENSHOTS_DIR``.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.async_api import (
    BrowserContext,
    ConsoleMessage,
    Error,
    Page,
    Route,
    ViewportSize,
    async_playwright,
)

CHROMIUM_ENV = "HERALD_CHROMIUM"
"""The Chromium binary to drive, instead of Debian's."""
DEBIAN_CHROMIUM = "/usr/bin/chromium"
CHROMIUM_MISSING = (
    "No Chromium for the browser tests. Fix: install Debian's chromium: "
    f"sudo apt-get install chromium (or point {CHROMIUM_ENV} at a Chromium binary)."
)
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
"""Headless in a container or CI runner, and quiet: no sandbox (root in CI), no GPU,
no calls home (updates, sync, QUIC probes) that could log errors of their own."""

LOG_DIR_ENV = "HERALD_E2E_LOG_DIR"
SCREENSHOTS_ENV = "HERALD_SCREENSHOTS_DIR"
"""A second place for the screenshots (``make screenshots``: docs/screenshots/)."""


@dataclass(frozen=True)
class Viewport:
    """A screen size the pages and emails are looked at in."""

    name: str
    width: int
    height: int

    def size(self) -> ViewportSize:
        """As Playwright takes it."""
        return {"width": self.width, "height": self.height}


DESKTOP = Viewport("desktop", 1280, 800)
PHONE = Viewport("phone", 390, 844)
VIEWPORTS = (DESKTOP, PHONE)


def chromium_binary(environ: Mapping[str, str] = os.environ) -> str | None:
    """The Chromium to drive, if it is there and executable."""
    candidate = environ.get(CHROMIUM_ENV) or DEBIAN_CHROMIUM
    return candidate if os.path.isfile(candidate) and os.access(candidate, os.X_OK) else None


def chromium_problem(environ: Mapping[str, str] = os.environ) -> str | None:
    """Why the browser tests cannot run here (``None``: they can)."""
    if chromium_binary(environ) is not None:
        return None
    if configured := environ.get(CHROMIUM_ENV):
        return f"{CHROMIUM_ENV}={configured} is not an executable file. {CHROMIUM_MISSING}"
    return CHROMIUM_MISSING


@asynccontextmanager
async def launch_chromium() -> AsyncIterator[BrowserContext]:
    """Headless Chromium on a new empty profile, desktop-sized; closed and removed after."""
    binary = chromium_binary()
    if binary is None:
        raise RuntimeError(chromium_problem())
    with tempfile.TemporaryDirectory(prefix="herald-chromium-") as profile:
        async with async_playwright() as playwright:
            context = await playwright.chromium.launch_persistent_context(
                profile,
                executable_path=binary,
                headless=True,
                args=list(CHROMIUM_ARGS),
                viewport=DESKTOP.size(),
            )
            try:
                yield context
            finally:
                await context.close()


CSP_REPORTER = "__heraldReportCspViolation"
CSP_LISTENER = f"""
document.addEventListener("securitypolicyviolation", (event) => {{
  window.{CSP_REPORTER}(JSON.stringify({{
    directive: event.effectiveDirective || event.violatedDirective,
    blocked: event.blockedURI,
    source: event.sourceFile,
    line: event.lineNumber,
    sample: event.sample,
  }}));
}}, true);
"""
"""Runs before any script of every document the page loads (and outside its CSP)."""

FAILED_RESPONSE = re.compile(
    r"^Failed to load resource: the server responded with a status of (\d+)"
)


@dataclass(frozen=True)
class PageProblem:
    """One thing a strict page must not show: what kind, what it said, where."""

    kind: str
    text: str
    url: str = ""

    def __str__(self) -> str:
        return f"{self.kind}: {self.text}" + (f" (at {self.url})" if self.url else "")


@dataclass
class PageWatch:
    """A page and every console error, script error and CSP violation it has shown."""

    page: Page
    problems: list[PageProblem] = field(default_factory=list)
    allowed_responses: set[tuple[str, int]] = field(default_factory=set)

    @classmethod
    async def on(cls, page: Page) -> PageWatch:
        """Start watching ``page`` (before it loads anything worth watching)."""
        watch = cls(page)
        page.on("console", watch._console)
        page.on("pageerror", watch._page_error)
        await page.expose_binding(CSP_REPORTER, watch._csp_violation)
        await page.add_init_script(CSP_LISTENER)
        return watch

    def allow_failed_response(self, *, path: str, status: int) -> None:
        """An error answer the test provokes on purpose: Chromium's console error for a
        ``status`` response from ``path`` is not a problem."""
        self.allowed_responses.add((path, status))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        url = str(message.location.get("url", ""))
        failed = FAILED_RESPONSE.match(message.text)
        if failed and (urlsplit(url).path, int(failed[1])) in self.allowed_responses:
            return
        self.problems.append(PageProblem("console error", message.text, url))

    def _page_error(self, error: Error) -> None:
        self.problems.append(PageProblem("uncaught script error", error.stack or str(error)))

    def _csp_violation(self, source: dict[str, Any], report: str) -> None:
        details = json.loads(report)
        frame = source.get("frame")
        where = f"{details.get('source') or ''}:{details.get('line') or ''}".strip(":")
        sample = f" ({details['sample']!r})" if details.get("sample") else ""
        self.problems.append(
            PageProblem(
                "CSP violation",
                f"{details.get('directive')} blocked {details.get('blocked') or 'inline'}{sample}",
                where or (frame.url if frame is not None else ""),
            )
        )

    async def settle(self) -> None:
        """Let the events the page has already raised reach this watch."""
        if not self.page.is_closed():
            # A round trip through the page: everything it logged before is delivered.
            await self.page.evaluate("0")

    def report(self) -> str:
        """The problems, one a line, for a failing test's message."""
        return "\n".join(f"  - {problem}" for problem in self.problems)


@asynccontextmanager
async def strict_page(context: BrowserContext) -> AsyncIterator[PageWatch]:
    """A new page in ``context``, watched; closed after."""
    page = await context.new_page()
    try:
        yield await PageWatch.on(page)
    finally:
        await page.close()


async def fail_on_problems(watch: PageWatch) -> None:
    """Fail the running test if the page showed any problem (listing them all)."""
    await watch.settle()
    if watch.problems:
        pytest.fail(
            f"the page showed {len(watch.problems)} problem(s) a browser user would see "
            f"in the console:\n{watch.report()}",
            pytrace=False,
        )


@asynccontextmanager
async def offline_page(context: BrowserContext) -> AsyncIterator[Page]:
    """A page that loads nothing from the network: for an email's HTML, seen as a mail
    client that blocks remote content shows it."""
    page = await context.new_page()

    async def block(route: Route) -> None:
        await route.abort("blockedbyclient")

    await page.route(re.compile(r"^(https?|wss?|ftp):"), block)
    try:
        yield page
    finally:
        await page.close()


def screenshot_dirs(environ: Mapping[str, str] = os.environ) -> list[Path]:
    """Where screenshots go: the e2e logs' ``screenshots/``, and ``$HERALD_SCREENSHOTS_DIR``."""
    dirs = []
    if log_dir := environ.get(LOG_DIR_ENV):
        dirs.append(Path(log_dir) / "screenshots")
    if extra := environ.get(SCREENSHOTS_ENV):
        dirs.append(Path(extra))
    return dirs


async def save_screenshots(page: Page, name: str) -> list[Path]:
    """Screenshot ``page`` whole at desktop and phone size as ``{name}.{viewport}.png``
    in every screenshot directory; the paths written. The page keeps its size."""
    dirs = screenshot_dirs()
    if not dirs:
        return []
    for directory in dirs:
        directory.mkdir(parents=True, exist_ok=True)
    before = page.viewport_size
    written: list[Path] = []
    try:
        for viewport in VIEWPORTS:
            await page.set_viewport_size(viewport.size())
            image = await page.screenshot(full_page=True, animations="disabled", caret="hide")
            for directory in dirs:
                path = directory / f"{name}.{viewport.name}.png"
                path.write_bytes(image)
                written.append(path)
    finally:
        if before is not None:
            await page.set_viewport_size(before)
    return written


@pytest.fixture(scope="session")
async def browser_context() -> AsyncIterator[BrowserContext]:
    """One Chromium for the session (fails every browser test, saying how to install one,
    where there is none)."""
    if (problem := chromium_problem()) is not None:
        pytest.fail(problem, pytrace=False)
    async with launch_chromium() as context:
        yield context


@pytest.fixture
async def page_watch(browser_context: BrowserContext) -> AsyncIterator[PageWatch]:
    """A strict page: the test fails if it shows a console error, a script error or a CSP
    violation (declare the error answers the test provokes with ``allow_failed_response``)."""
    await browser_context.clear_cookies()
    async with strict_page(browser_context) as watch:
        yield watch
        await fail_on_problems(watch)


@pytest.fixture
def page(page_watch: PageWatch) -> Page:
    """The strict page of ``page_watch``."""
    return page_watch.page
