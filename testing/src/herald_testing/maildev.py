"""MailDev: a real SMTP server with an HTTP API, for tests and the local stack.

MailDev 2.x serves its REST API at ``/email`` and ``/healthz``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from herald_testing.backends import BackendUnavailableError, containers_only, docker_available
from herald_testing.ports import free_port, wait_for_port
from herald_testing.processes import terminate

MAILDEV_VERSION = "2.2.1"
MAILDEV_IMAGE = f"maildev/maildev:{MAILDEV_VERSION}"
MAILDEV_ENV = "HERALD_TEST_MAILDEV"
"""``smtp_host:smtp_port,http://api`` of a MailDev to use instead of starting one."""

MAILDEV_MISSING = (
    "No MailDev for the tests. Fix, any one of: install Node.js 20 + npm and run "
    "`make install` (installs MailDev from npm); start Docker (the tests then run "
    f"{MAILDEV_IMAGE}); or set {MAILDEV_ENV}=smtp_host:smtp_port,http://host:web_port."
)
LOCAL_BIN = Path(__file__).resolve().parents[2] / "node_modules" / ".bin" / "maildev"


@dataclass(frozen=True)
class MailDev:
    smtp_host: str
    smtp_port: int
    api_url: str


def maildev_binary() -> str | None:
    if LOCAL_BIN.exists():
        return str(LOCAL_BIN)
    return shutil.which("maildev")


@contextlib.contextmanager
def run_maildev_process(
    *, smtp_port: int | None = None, web_port: int | None = None, quiet: bool = True
) -> Iterator[MailDev]:
    """Run MailDev from npm as a child process until the block ends."""
    binary = maildev_binary()
    if binary is None:
        raise BackendUnavailableError(
            "MailDev is not installed: run `make install` (npm install in testing/)."
        )
    smtp_port = smtp_port or free_port()
    web_port = web_port or free_port()
    args = [binary, "--ip", "127.0.0.1", "--smtp", str(smtp_port), "--web", str(web_port)]
    proc = subprocess.Popen(
        [*args, "--silent"] if quiet else args,
        stdout=subprocess.DEVNULL if quiet else None,
        stderr=subprocess.DEVNULL if quiet else None,
    )
    try:
        wait_for_port("127.0.0.1", smtp_port, what="MailDev SMTP")
        wait_for_port("127.0.0.1", web_port, what="MailDev web")
        yield MailDev("127.0.0.1", smtp_port, f"http://127.0.0.1:{web_port}")
    finally:
        terminate(proc, within=5.0)


def maildev_source() -> str | None:
    """Where the tests' MailDev comes from: ``env``, ``npm``, ``container`` or ``None``
    (only a container under ``HERALD_TEST_BACKENDS=containers``)."""
    if not containers_only():
        if os.environ.get(MAILDEV_ENV):
            return "env"
        if maildev_binary() is not None:
            return "npm"
    return "container" if docker_available() else None


@contextlib.contextmanager
def maildev() -> Iterator[MailDev]:
    """A MailDev from the environment, from npm, or from Docker, in that order."""
    source = maildev_source()
    if source == "env":
        smtp, api_url = os.environ[MAILDEV_ENV].split(",", 1)
        host, port = smtp.rsplit(":", 1)
        yield MailDev(host, int(port), api_url.rstrip("/"))
    elif source == "npm":
        with run_maildev_process() as server:
            yield server
    elif source == "container":
        from testcontainers.core.container import DockerContainer  # noqa: PLC0415

        with DockerContainer(MAILDEV_IMAGE).with_exposed_ports(1025, 1080) as container:
            host = container.get_container_host_ip()
            smtp_port = int(container.get_exposed_port(1025))
            wait_for_port(host, smtp_port, what="MailDev SMTP")
            yield MailDev(host, smtp_port, f"http://{host}:{container.get_exposed_port(1080)}")
    else:
        raise BackendUnavailableError(MAILDEV_MISSING)


class MailDevClient:
    """MailDev's REST API, as the tests read it."""

    def __init__(self, api_url: str) -> None:
        self.api_url = api_url.rstrip("/")
        self._http = httpx.AsyncClient(base_url=self.api_url, timeout=5)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def emails(self) -> list[dict[str, Any]]:
        response = await self._http.get("/email")
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()
        return result

    async def clear(self) -> None:
        (await self._http.delete("/email/all")).raise_for_status()

    async def emails_to(self, address: str) -> list[dict[str, Any]]:
        return [
            email
            for email in await self.emails()
            if any(to.get("address", "").lower() == address.lower() for to in email.get("to", []))
        ]

    async def count_by_recipient(self, addresses: Iterable[str]) -> Counter[str]:
        """How many emails each of ``addresses`` received (absent: none)."""
        wanted = {address.lower() for address in addresses}
        return Counter(
            to["address"].lower()
            for email in await self.emails()
            for to in email.get("to", [])
            if to.get("address", "").lower() in wanted
        )

    async def wait_for_all(
        self, addresses: Iterable[str], *, within: float, count: int = 1
    ) -> Counter[str]:
        """Wait until each of ``addresses`` has ``count`` emails or more; how many each got.

        Raises ``AssertionError`` naming the missing ones after ``within`` seconds.
        """
        wanted = {address.lower() for address in addresses}
        deadline = time.monotonic() + within
        while True:
            counts = await self.count_by_recipient(wanted)
            if all(counts[address] >= count for address in wanted):
                return counts
            if time.monotonic() > deadline:
                missing = sorted(a for a in wanted if counts[a] < count)
                raise AssertionError(
                    f"{len(missing)} of {len(wanted)} never arrived within {within} s: "
                    f"{missing[:5]}"
                )
            await asyncio.sleep(0.1)

    async def wait_for_email(self, address: str, *, within: float = 5.0) -> dict[str, Any]:
        """The first email to ``address``, waiting up to ``within`` seconds for it."""
        deadline = time.monotonic() + within
        while True:
            if found := await self.emails_to(address):
                return found[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"no email to {address} within {within} s")
            await asyncio.sleep(0.05)

    async def source(self, email_id: str) -> str:
        """The raw RFC 5322 source of one email, headers included."""
        response = await self._http.get(f"/email/{email_id}/source")
        response.raise_for_status()
        return response.text
