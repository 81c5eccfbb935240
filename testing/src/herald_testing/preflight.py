"""Checks that run before ``make test`` and ``make dev`` start anything.

Each problem is one message naming its fix (README "Troubleshooting" quotes
them), printed without a traceback; the command then exits 1.

    python -m herald_testing.preflight test   # where the tests' backends come from
    python -m herald_testing.preflight e2e    # the browser the e2e suite drives
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from urllib.parse import urlsplit

from herald_testing import backends
from herald_testing.browser import chromium_problem
from herald_testing.maildev import MAILDEV_MISSING, maildev_binary, maildev_source
from herald_testing.pgbouncer import pgbouncer_binary
from herald_testing.ports import port_open
from herald_testing.sentinel import SENTINEL_MISSING, sentinel_binary


def test_backends() -> list[str]:
    """Problems that would stop ``make test``; on none, one line saying what it uses."""
    problems: list[str] = []
    used: list[str] = []
    try:
        sources = {
            "PostgreSQL": (backends.postgres_source(), backends.POSTGRES_ENV, 5432),
            "Redis": (backends.redis_source(), backends.REDIS_ENV, 6379),
        }
    except backends.BackendUnavailableError as exc:
        return [str(exc)]
    for what, (source, env, port) in sources.items():
        if source is None:
            problems.append(str(backends.missing_error(what, env, port)))
        else:
            used.append(f"{what} ({_where(source, port)})")
    maildev = maildev_source()
    if maildev is None:
        problems.append(
            str(backends.missing_error("MailDev", "HERALD_TEST_MAILDEV", 1025))
            if backends.containers_only()
            else MAILDEV_MISSING
        )
    else:
        used.append(f"MailDev ({'from npm' if maildev == 'npm' else _where(maildev, 1025)})")
    if not problems:
        print(f"herald: the tests use {', '.join(used)}", flush=True)
        if pgbouncer_binary() is None:
            print(f"herald: {PGBOUNCER_MISSING}", flush=True)
        if sentinel_binary() is None:
            print(f"herald: {SENTINEL_MISSING}", flush=True)
    return problems


PGBOUNCER_MISSING = (
    "pgbouncer not installed: the PgBouncer tests are skipped (Debian: apt install pgbouncer)"
)


def _where(source: str, port: int) -> str:
    return {
        "env": "from the environment",
        "local": f"127.0.0.1:{port}",
        "container": "a testcontainers container",
    }[source]


START_POSTGRES = "start PostgreSQL (Debian: sudo pg_ctlcluster 15 main start)"
START_REDIS = "start Redis (Debian: sudo systemctl start redis-server)"


def dev_stack(*, database_url: str, redis_url: str, ports: Mapping[str, int]) -> list[str]:
    """Problems that would stop ``make dev``: its servers unreachable, its ports taken,
    no MailDev from npm."""
    problems: list[str] = []
    servers = (
        ("PostgreSQL", "HERALD_DATABASE_URL", database_url, 5432, START_POSTGRES),
        ("Redis", "HERALD_REDIS_URL", redis_url, 6379, START_REDIS),
    )
    for what, variable, url, default_port, start in servers:
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or default_port
        if not port_open(host, port):
            problems.append(
                f"{what} at {host}:{port} does not answer ({variable}). Fix: {start}, or "
                f"point {variable} at yours; with Docker, `make up` runs the whole stack "
                "in containers instead."
            )
    for variable, port in ports.items():
        if port_open("127.0.0.1", port):
            problems.append(
                f"port {port} ({variable}) is already in use by another program. "
                f"Fix: stop it (see: ss -ltnp 'sport = :{port}'), or choose another "
                f"port: {variable}={port + 1} make dev"
            )
    if maildev_binary() is None:
        problems.append(
            "make dev runs MailDev from npm, and it is not installed (no Node.js/npm). "
            "Fix: install Node.js 20 + npm (Debian: apt install nodejs npm), then "
            "`make dev` again; or, with Docker, `make up` (MailDev in a container)."
        )
    return problems


def e2e_browser() -> list[str]:
    """Problems that would stop ``make e2e``'s browser tests: no Chromium to drive."""
    problem = chromium_problem()
    return [problem] if problem is not None else []


def report(problems: list[str]) -> int:
    """Print ``problems`` (one paragraph each); the exit status to end with."""
    for problem in problems:
        print(f"herald: {problem}", file=sys.stderr)
    return 1 if problems else 0


def main(argv: list[str]) -> int:
    checks = {"test": test_backends, "e2e": e2e_browser}
    if len(argv) != 1 or argv[0] not in checks:
        print("usage: python -m herald_testing.preflight test|e2e", file=sys.stderr)
        return 2
    return report(checks[argv[0]]())


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
