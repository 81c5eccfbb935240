"""Herald's services as real processes in a test: ``herald-api serve`` and a notifier.

For tests that must see a process die (a crash point) or a message cross a
real service boundary. Each process gets only the ``HERALD_*`` variables the
test gives it (none inherited), runs in the log file's directory (no ``.env``
there to change its settings) and writes its JSON log lines to that file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from herald_testing.ports import free_port


@contextmanager
def server_process(
    command: list[str], directory: Path, name: str
) -> Iterator[subprocess.Popen[bytes]]:
    """A server binary (PgBouncer, Redis, Sentinel) run in ``directory`` with its
    output in ``<name>.log`` there; terminated (killed after 10 s) when the block ends."""
    with (directory / f"{name}.log").open("wb") as log:
        process = subprocess.Popen(command, cwd=directory, stdout=log, stderr=log)
        try:
            yield process
        finally:
            terminate(process, within=10.0)


def terminate(process: subprocess.Popen[bytes], *, within: float) -> None:
    """SIGTERM ``process``; SIGKILL it if it has not exited ``within`` seconds. Reaped."""
    process.terminate()
    try:
        process.wait(timeout=within)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _environment(env: Mapping[str, str]) -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    return inherited | {"HERALD_LOG_FORMAT": "json", "HERALD_METRICS_PORT": "0"} | dict(env)


@dataclass
class Running:
    """A service process and its log."""

    process: asyncio.subprocess.Process
    log_path: Path

    def lines(self) -> list[dict[str, Any]]:
        """Its JSON log lines so far."""
        text = self.log_path.read_text()
        return [json.loads(line) for line in text.splitlines() if line.startswith("{")]

    def events(self) -> list[str]:
        return [line["event"] for line in self.lines()]

    async def exit_status(self, *, within: float = 15.0) -> int:
        """Its exit status, once it has ended by itself (within ``within`` seconds)."""
        return await asyncio.wait_for(self.process.wait(), timeout=within)


@dataclass
class ServedApi(Running):
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def herald_api_command() -> str:
    beside_python = Path(sys.executable).with_name("herald-api")
    found = str(beside_python) if beside_python.exists() else shutil.which("herald-api")
    if found is None:
        raise RuntimeError("the herald-api console script is not installed")
    return found


@asynccontextmanager
async def serve_api(env: Mapping[str, str], *, log_path: Path) -> AsyncIterator[ServedApi]:
    """``herald-api serve`` on a free port with ``env``, once it answers ``/health/live``;
    killed when the block ends if it is still running."""
    port = free_port()
    with log_path.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            herald_api_command(),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            env=_environment(env),
            cwd=log_path.parent,
            stdout=log_file,
            stderr=asyncio.subprocess.STDOUT,
        )
        served = ServedApi(process=process, log_path=log_path, port=port)
        try:
            await _wait_until_live(served)
            yield served
        finally:
            await _kill(process)


@asynccontextmanager
async def running_notifier(env: Mapping[str, str], *, log_path: Path) -> AsyncIterator[Running]:
    """A notifier worker (``python -m herald_notifier``) with ``env``; stopped with
    SIGTERM (then killed) when the block ends."""
    with log_path.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "herald_notifier",
            env=_environment(env),
            cwd=log_path.parent,
            stdout=log_file,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            yield Running(process=process, log_path=log_path)
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(process.wait(), timeout=10)
            await _kill(process)


async def _wait_until_live(served: ServedApi) -> None:
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient(base_url=served.base_url, timeout=1) as http:
        while time.monotonic() < deadline:
            if served.process.returncode is not None:
                tail = served.log_path.read_text()[-2000:]
                raise RuntimeError(
                    f"herald-api exited early with {served.process.returncode}: {tail}"
                )
            with contextlib.suppress(httpx.TransportError):
                if (await http.get("/health/live")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError("herald-api did not start serving within 30 s")


async def _kill(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.kill()
        await process.wait()


async def scrape_metrics(
    url: str,
    process: asyncio.subprocess.Process,
    done: Callable[[str], bool],
    *,
    within: float = 15.0,
) -> str:
    """The Prometheus page at ``url`` of a service ``process`` once ``done(text)``
    holds; fails at once if the process exits first."""
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(timeout=2) as http:
        while time.monotonic() < deadline:
            if process.returncode is not None:
                raise AssertionError(f"the process exited with {process.returncode}")
            with contextlib.suppress(httpx.TransportError):
                response = await http.get(url)
                if response.status_code == 200 and done(response.text):
                    return response.text
            await asyncio.sleep(0.05)
    raise AssertionError(f"no metrics at {url} within {within} s")
