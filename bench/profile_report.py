"""Summarise a py-spy profile recorded with ``--format raw --threads --nolineno --full-filenames``.

    python -m bench.profile_report PROFILE.txt [UNITS UNIT]

``UNITS UNIT`` (e.g. ``5000 email``): what the process did while it was
recorded, to print CPU milliseconds per unit as well (py-spy's default
100 samples a second: one sample = 10 ms of one thread).

py-spy's raw format is one collapsed stack a line, outermost frame first,
then the number of samples: ``thread (tid): name;func (file);... count``.
Idle threads are not sampled (py-spy's default), so the samples are the
time a thread was on a CPU or runnable: the shares below are shares of the
process's CPU time, not of wall time.

Printed: samples per thread; the top functions by self time (the sample's
innermost frame) and by total time (the function anywhere in the stack);
every sample attributed to one *area* (the innermost frame that belongs to a
known library or module, so a regex run by the email package counts as the
email package); and *inclusive* shares of some code paths (a sample counts
for each path its stack passes through, so these overlap).
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

AREAS: list[tuple[str, str]] = [
    # (area, regex on the frame's file); the innermost frame that matches any wins.
    ("argon2 (password hash)", r"/argon2/"),
    ("email package: MIME build + serialise", r"/python3\.\d+/email/"),
    ("jinja2 templates", r"/jinja2/|\.j2\)?$|<template>"),
    ("email-validator", r"/email_validator/"),
    ("aiosmtplib (SMTP client)", r"/aiosmtplib/"),
    ("aiosmtpd (sink)", r"/aiosmtpd/"),
    ("delivery records (claim/mark)", r"herald_notifier/delivery\.py"),
    ("redis-py (Redis client)", r"/redis/"),
    ("SAQ", r"/saq/"),
    ("arq", r"/arq/"),
    ("pydantic", r"/pydantic(_core)?/"),
    ("structlog + logging", r"/structlog/|/python3\.\d+/logging/"),
    ("prometheus_client", r"/prometheus_client/"),
    ("asyncpg", r"/asyncpg/"),
    ("SQLAlchemy + SQLModel", r"/sqlalchemy/|/sqlmodel/"),
    ("uvicorn + httptools (HTTP server)", r"/uvicorn/|/httptools/|/h11/"),
    ("FastAPI + Starlette", r"/fastapi/|/starlette/|/asgi_correlation_id/"),
    ("anyio", r"/anyio/"),
    ("httpx/httpcore (client)", r"/httpx/|/httpcore/"),
    ("herald_api", r"herald_api/"),
    ("herald_notifier", r"herald_notifier/"),
    ("herald_shared", r"herald_shared/"),
    ("asyncio / uvloop (event loop, sockets)", r"/python3\.\d+/asyncio/|/uvloop/"),
    ("concurrent.futures / threading", r"/python3\.\d+/(concurrent|threading\.py)"),
    ("json", r"/python3\.\d+/json/"),
]

PATHS: list[tuple[str, str]] = [
    # (code path, regex on a whole frame "func (file)"); inclusive.
    ("rendering (Renderer.* : templates, headers, MIME parts)", r"^Renderer\.\w+ \("),
    ("MIME serialising (email.generator)", r"/email/generator\.py"),
    ("SMTP session (aiosmtplib)", r"/aiosmtplib/"),
    ("delivery claim/renew/mark (herald_notifier.delivery)", r"herald_notifier/delivery\.py"),
    ("SAQ worker and queue", r"/saq/"),
    ("Redis round trips (redis-py)", r"/redis/"),
    ("logging (structlog)", r"/structlog/"),
    ("metrics (prometheus_client)", r"/prometheus_client/"),
    ("argon2 hashing", r"/argon2/"),
    ("database (SQLAlchemy + asyncpg)", r"/sqlalchemy/|/asyncpg/"),
    ("HTTP server (uvicorn + httptools)", r"/uvicorn/|/httptools/"),
    ("request handling (FastAPI + Starlette)", r"/fastapi/|/starlette/"),
    ("signup (herald_api AccountService.sign_up)", r"herald_api/accounts/service\.py"),
    ("outbox + dispatch (herald_api)", r"herald_api/(outbox|dispatch|relay)\.py"),
    ("pydantic validation / serialisation", r"/pydantic(_core)?/"),
]

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*)\)$")


@dataclass
class Profile:
    stacks: list[tuple[str, list[str], int]]
    """(thread name, frames outermost first, samples)."""

    @property
    def total(self) -> int:
        return sum(count for _, _, count in self.stacks)


def parse(text: str) -> Profile:
    stacks: list[tuple[str, list[str], int]] = []
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        thread = frames[0]
        if thread.startswith(("thread ", "process ")):
            frames = frames[1:]
            thread = re.sub(r"^thread \(\d+\): ?", "", thread) or "?"
            thread = re.sub(r"_\d+$", "_N", thread)  # pool threads: argon2_0, argon2_1 -> argon2_N
        else:
            thread = "?"
        stacks.append((thread, frames, int(count)))
    return Profile(stacks)


def short(frame: str) -> str:
    """``func (file)`` with the file cut to its package-relative path."""
    match = _FRAME.match(frame)
    if not match:
        return frame
    file = match["file"]
    for marker in ("site-packages/", "/src/", "/lib/python3.11/", "/work/main/"):
        if marker in file:
            file = file.rsplit(marker, 1)[1]
            break
    return f"{match['func']} ({file})"


def area(frames: list[str]) -> str:
    for frame in reversed(frames):
        match = _FRAME.match(frame)
        file = match["file"] if match else frame
        for name, pattern in AREAS:
            if re.search(pattern, file):
                return name
    return "other"


def report(
    profile: Profile, *, top: int = 15, per: tuple[int, str] | None = None, rate: int = 100
) -> str:
    """The summary; with ``per`` = (units, unit name), CPU ms per unit next to each share."""
    total = profile.total or 1
    out: list[str] = [f"samples: {profile.total} (CPU-active only; shares of CPU time)"]
    if per is not None:
        units, unit = per
        out.append(
            f"{units:,} {unit}s recorded: {1000 * profile.total / rate / units:.2f} ms "
            f"of CPU per {unit} (all threads; runnable time waiting for a core included)"
        )

    def pct(n: int) -> str:
        share = f"{100 * n / total:5.1f}%"
        if per is None:
            return share
        return f"{share} {1000 * n / rate / per[0]:6.2f} ms"

    threads: Counter[str] = Counter()
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    paths: Counter[str] = Counter()
    for thread, frames, count in profile.stacks:
        threads[thread] += count
        if frames:
            own[short(frames[-1])] += count
        for name in {short(frame) for frame in frames}:
            inclusive[name] += count
        areas[area(frames)] += count
        for name, pattern in PATHS:
            if any(re.search(pattern, frame) for frame in frames):
                paths[name] += count
    out.append("\nby thread:")
    out += [f"  {pct(n)}  {name}" for name, n in threads.most_common()]
    out.append(f"\ntop {top} by self time:")
    out += [f"  {pct(n)}  {name}" for name, n in own.most_common(top)]
    out.append(f"\ntop {top} by total time:")
    out += [f"  {pct(n)}  {name}" for name, n in inclusive.most_common(top)]
    out.append("\nby area (innermost known frame; sums to 100%):")
    out += [f"  {pct(n)}  {name}" for name, n in areas.most_common()]
    out.append("\ncode paths (inclusive; overlapping):")
    out += [f"  {pct(n)}  {name}" for name, n in paths.most_common() if n]
    return "\n".join(out)


def main(argv: list[str]) -> int:
    path, *rest = argv
    per = (int(rest[0]), rest[1]) if rest else None
    print(f"== {path}")
    print(report(parse(Path(path).read_text()), per=per))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
