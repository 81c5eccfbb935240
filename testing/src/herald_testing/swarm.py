"""``make swarm-e2e``: Herald with several replicas of each service on a one-node Docker Swarm.

    python -m herald_testing.swarm [--signups-per-second 4] [PYTEST ARGS...]

Builds the images (``HERALD_IMAGE_TAG=swarm``), joins a swarm (``docker swarm
init`` when the engine is in none; a swarm someone else made is used and left
as found) and deploys ``deploy/swarm/stack.yaml`` as ``herald-swarm-<id>``: a
migration job, 2 API, 3 notifier and 2 scheduler replicas. Once every service
runs healthy it runs the e2e suite against both API replicas in turn
(``HERALD_E2E_API_URLS``; the tests that need compose skip) and, at the same
time, a steady stream of signups to both replicas while the notifier is
(a) rolled to another image tag, (b) SIGKILLed in one replica, (c) scaled
3 -> 1 -> 3. Then it waits for the stream's welcome emails and counts them in
MailDev (``herald_testing.chaos_tally``).

It prints one block of figures (also ``.e2e/<id>/swarm.json``, with every
service's log) and exits non-zero on any email lost or duplicated, any signup
given up, a failed suite, or an API replica that served no signup. It always
removes the stack with its volumes, leaves the swarm if it made it and removes
the extra image tag. Where no Docker engine answers it prints one line and
exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, TextIO

import httpx

from herald_testing.chaos_client import SignupResult, sign_up_until_accepted
from herald_testing.chaos_tally import POSSIBLE_DUPLICATE_EVENTS, events_by_message, read_mail
from herald_testing.maildev import MailDevClient
from herald_testing.prometheus import sample_sum
from herald_testing.roundrobin import RoundRobinTransport
from herald_testing.stack import E2E_TESTS, ROOT
from herald_testing.swarm_docker import (
    DockerError,
    docker,
    engine_answers,
    json_lines_by_task,
    running,
    tasks,
    wait_until,
)
from herald_testing.swarm_stack import (
    REPLICAS,
    Run,
    build_images,
    deploy,
    followed_logs,
    host_urls,
    remove_stack,
    say,
    stack_env,
    swarm,
)

CHANGE_SECONDS = 180.0
"""The most a rolling update, a replacement or a scaling may take."""
SUITE_SECONDS = 300.0
SIGNUP_PATIENCE_SECONDS = 60.0
MAIL_SECONDS = 120.0
"""How long, once the stream ended, every accepted signup's welcome email may take."""
LATE_MAIL_SECONDS = 3.0
"""Waited once every email arrived, so that a would-be duplicate arrives before counting."""


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


# -- the signup stream ------------------------------------------------------------


class SignupStream(threading.Thread):
    """Signs fresh addresses up at a steady rate, to each API replica in turn, until
    ``stop()``; keeps every signup's result."""

    def __init__(self, run: Run, urls: list[str], per_second: float) -> None:
        super().__init__(name="signup-stream", daemon=True)
        self.run_id = run.run_id
        self.urls = urls
        self.per_second = per_second
        self.results: list[SignupResult] = []
        self.started_at = self.ended_at = 0.0
        self._halt = threading.Event()

    def stop(self) -> list[SignupResult]:
        self._halt.set()
        self.join(timeout=SIGNUP_PATIENCE_SECONDS + 30)
        return self.results

    def run(self) -> None:
        self.results = asyncio.run(self._stream())

    async def _stream(self) -> list[SignupResult]:
        transport = RoundRobinTransport(self.urls)
        async with httpx.AsyncClient(base_url=self.urls[0], transport=transport, timeout=10) as api:
            gate = asyncio.Semaphore(8)

            async def one(n: int) -> SignupResult:
                async with gate:
                    return await sign_up_until_accepted(
                        api,
                        address=f"swarm-{self.run_id}-{n:04d}@example.com",
                        display_name="Swarm",
                        within=SIGNUP_PATIENCE_SECONDS,
                    )

            self.started_at = time.monotonic()
            pending: list[asyncio.Task[SignupResult]] = []
            while not self._halt.is_set():
                pending.append(asyncio.create_task(one(len(pending))))
                next_at = self.started_at + len(pending) / self.per_second
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            results = await asyncio.gather(*pending)
            self.ended_at = time.monotonic()
            return results


# -- the disruptions --------------------------------------------------------------


def roll_notifier(run: Run) -> None:
    """(a) A rolling update to the same image under another tag."""
    notifier = run.service("notifier")
    before = {task.container for task in running(notifier)}
    started = time.monotonic()
    docker(
        "service", "update", "--detach=false", "--quiet", "--no-resolve-image",
        "--image", run.rolled_image, notifier, timeout=CHANGE_SECONDS,
    )  # fmt: skip
    rolled = time.monotonic() - started
    state = json.loads(docker("service", "inspect", notifier))[0].get("UpdateStatus", {})
    now = running(notifier)
    if state.get("State") != "completed" or {t.image for t in now} != {run.rolled_image}:
        run.problems.append(f"the notifier's rolling update did not complete: {state}")

    def old_stopped() -> bool:
        live = set(docker("ps", "-q", "--no-trunc").split())
        return not before & live

    stopped = wait_until(old_stopped, "the old notifier replicas stopped", within=CHANGE_SECONDS)
    run.figures["notifier_rolling_update_seconds"] = round(rolled, 1)
    run.figures["notifier_old_replicas_stopped_seconds"] = round(rolled + stopped, 1)
    say(f"(a) notifier rolled to {run.rolled_image} in {rolled:.1f} s ({len(now)} replicas)")


def kill_a_notifier(run: Run) -> None:
    """(b) SIGKILL one replica's container; time until Swarm runs 3 again."""
    notifier = run.service("notifier")
    replicas = running(notifier)
    if not replicas:
        raise RuntimeError("no notifier replica runs healthy to kill")
    victim = replicas[0]
    docker("kill", victim.container)

    def replaced() -> bool:
        now = running(notifier)
        return len(now) == REPLICAS["notifier"] and victim.id not in {t.id for t in now}

    seconds = wait_until(replaced, "3 notifier replicas again", within=CHANGE_SECONDS, every=0.25)
    run.figures["notifier_kill_replacement_seconds"] = round(seconds, 1)
    say(f"(b) notifier task {victim.label} SIGKILLed: 3 running again after {seconds:.1f} s")


def scale_notifier(run: Run) -> None:
    """(c) 3 -> 1 -> 3 replicas."""
    notifier = run.service("notifier")
    for replicas, key in ((1, "down"), (REPLICAS["notifier"], "up")):
        started = time.monotonic()
        docker(
            "service", "scale", "--detach=false", f"{notifier}={replicas}", timeout=CHANGE_SECONDS
        )

        def scaled(replicas: int = replicas) -> bool:
            return len(running(notifier)) == replicas

        wait_until(scaled, f"{replicas} notifier replicas", within=CHANGE_SECONDS)
        seconds = time.monotonic() - started
        run.figures[f"notifier_scale_{key}_seconds"] = round(seconds, 1)
        say(f"(c) notifier scaled to {replicas} in {seconds:.1f} s")


# -- counting ---------------------------------------------------------------------


SIGNUP_REQUEST = {"method": "POST", "route": "/api/v1/users", "status": "202"}
METRICS_SCRAPE = "import urllib.request; print(urllib.request.urlopen({!r}).read().decode())"


def followed_lines(run: Run, service: str) -> list[tuple[str, dict[str, Any]]]:
    """``(task id, JSON line)`` of what ``service`` has logged so far (its followed log)."""
    text = (run.log_dir / f"{service}.log").read_text(encoding="utf-8", errors="replace")
    return list(json_lines_by_task(text))


def signups_per_replica(run: Run) -> dict[str, dict[str, int]]:
    """Signups each API task answered 202: counted in its log lines, and read from its
    own /metrics (port 9100, inside the container)."""
    replicas = tasks(run.service("api"))
    served = {task.label: {"log_lines": 0, "metrics": 0} for task in replicas}
    labels = {task.id: task.label for task in replicas}
    for task_id, line in followed_lines(run, "api"):
        if (line.get("event"), line.get("path"), line.get("status")) == (
            "http.request",
            "/api/v1/users",
            202,
        ):
            label = labels.get(task_id, task_id[:12])
            served.setdefault(label, {"log_lines": 0, "metrics": 0})["log_lines"] += 1
    for task in replicas:
        with contextlib.suppress(DockerError, subprocess.TimeoutExpired):
            scrape = METRICS_SCRAPE.format("http://127.0.0.1:9100/metrics")
            exposition = docker("exec", task.container, "python", "-c", scrape, timeout=60)
            count = sample_sum(exposition, "herald_api_http_requests_total", SIGNUP_REQUEST)
            served[task.label]["metrics"] = int(count)
    return served


async def count_mail(run: Run, maildev_url: str, accepted: list[str]) -> None:
    inbox = MailDevClient(maildev_url)
    try:
        deadline = time.monotonic() + MAIL_SECONDS
        while True:
            mail = read_mail(await inbox.emails(), accepted)
            if all(mail.welcomes[a] for a in accepted) or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
        await asyncio.sleep(LATE_MAIL_SECONDS)
        emails = await inbox.emails()
    finally:
        await inbox.aclose()
    mail = read_mail(emails, accepted)
    every_address = {to.get("address", "") for email in emails for to in email.get("to", [])}
    everyone = read_mail(emails, every_address)
    lost = [a for a in accepted if not mail.welcomes[a]]
    duplicated = sum(n - 1 for n in mail.welcomes.values() if n > 1)
    everywhere = sum(n - 1 for n in everyone.welcomes.values() if n > 1)
    notifier_lines = [line for _, line in followed_lines(run, "notifier")]
    counted = events_by_message(notifier_lines, POSSIBLE_DUPLICATE_EVENTS)
    possible = sum(counted.values())
    # Resent copies of a message the notifier logged no possible duplicate for.
    unaccounted = sum(everyone.unaccounted(counted).values())
    run.figures |= {
        "stream_welcome_emails": sum(mail.welcomes.values()),
        "lost": len(lost),
        "duplicated": duplicated,
        "duplicated_any_address": everywhere,
        "emails_in_inbox": len(emails),
        "possible_duplicates_logged": possible,
        "duplicates_not_logged": unaccounted,
    }
    if lost:
        run.problems.append(f"{len(lost)} lost, e.g. {lost[:3]}")
    if duplicated or everywhere:
        run.problems.append(f"{max(duplicated, everywhere)} welcome emails duplicated")


def suite_figures(junit: Path) -> dict[str, int]:
    if not junit.exists():
        return {}
    root = ET.parse(junit).getroot()
    suite = root.find("testsuite") if root.tag == "testsuites" else root
    if suite is None:
        return {}
    counts = {key: int(suite.get(key, "0")) for key in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return counts


# -- the run ----------------------------------------------------------------------


def start_suite(
    run: Run, api: list[str], maildev_url: str, args: list[str]
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_E2E_")} | {
        "HERALD_E2E_API_URL": api[0],
        "HERALD_E2E_API_URLS": ",".join(api),
        "HERALD_E2E_MAILDEV_URL": maildev_url,
        # Where the followers write each service's `docker service logs --follow`
        # (a plain `docker service logs` call hung for minutes twice here).
        "HERALD_E2E_LOG_DIR": str(run.log_dir),
    }
    junit = run.log_dir / "pytest.xml"
    out = (run.log_dir / "pytest.log").open("wb")
    command = [sys.executable, "-m", "pytest", "-rs", str(E2E_TESTS), f"--junitxml={junit}"]
    say(f"e2e suite started against {', '.join(api)} (output: {out.name})")
    return subprocess.Popen(
        [*command, *args], env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
    )


def exercise(run: Run, per_second: float, pytest_args: list[str]) -> None:
    """Suite and signup stream at once, through the notifier's disruptions; then count."""
    api = host_urls(run, "api")
    [maildev_url] = host_urls(run, "maildev")
    suite = start_suite(run, api, maildev_url, pytest_args)
    stream = SignupStream(run, api, per_second)
    status: int | None = None
    try:
        stream.start()
        time.sleep(3)
        for disrupt in (roll_notifier, kill_a_notifier, scale_notifier):
            try:
                disrupt(run)
            except Exception as exc:  # the run goes on: the mail is still counted
                run.problems.append(f"{disrupt.__name__}: {type(exc).__name__}: {exc}")
        time.sleep(2)
        results = stream.stop()
        accepted = [r.address for r in results if r.accepted]
        run.figures |= {
            "stream_signups": len(results),
            "stream_accepted": len(accepted),
            "stream_failed": len(results) - len(accepted),
            "stream_retried": sum(1 for r in results if r.attempts > 1),
            "stream_seconds": round(stream.ended_at - stream.started_at, 1),
        }
        if len(results) != len(accepted):
            run.problems.append(f"{len(results) - len(accepted)} stream signups given up")
        say(f"signup stream: {len(accepted)} of {len(results)} accepted; waiting for the mail")
        asyncio.run(count_mail(run, maildev_url, accepted))
        status = suite.wait(timeout=SUITE_SECONDS)
    finally:
        if suite.poll() is None:
            suite.kill()
            suite.wait()
    run.figures["suite"] = suite_figures(run.log_dir / "pytest.xml") | {"exit_status": status}
    if status != 0:
        run.problems.append(f"the e2e suite failed (exit status {status}): see pytest.log")
    served = signups_per_replica(run)
    run.figures["signups_per_api_replica"] = served
    if idle := [label for label, n in served.items() if not n["log_lines"] or not n["metrics"]]:
        run.problems.append(f"API replicas that served no signup: {idle}")


def report(run: Run, out: TextIO = sys.stdout) -> None:
    f = run.figures
    suite = f.get("suite", {})
    lines = [
        f"swarm-e2e {run.run_id}: {'PASSED' if not run.problems else 'FAILED'}",
        f"  wall time                      {f.get('wall_seconds')} s "
        f"(build {f.get('build_seconds')} s, deploy {f.get('deploy_seconds')} s)",
        f"  e2e suite                      {suite.get('passed')} passed, "
        f"{suite.get('failures', 0) + suite.get('errors', 0)} failed, "
        f"{suite.get('skipped')} skipped (exit {suite.get('exit_status')})",
        "  signups per API replica        "
        + ", ".join(
            f"api.{label}: {n['log_lines']} (metrics {n['metrics']})"
            for label, n in f.get("signups_per_api_replica", {}).items()
        ),
        f"  stream signups                 {f.get('stream_accepted')} accepted of "
        f"{f.get('stream_signups')} ({f.get('stream_retried')} retried) "
        f"in {f.get('stream_seconds')} s",
        f"  welcome emails (stream)        {f.get('stream_welcome_emails')}",
        f"  lost                           {f.get('lost')}",
        f"  duplicated                     {f.get('duplicated')} "
        f"(any address in the inbox: {f.get('duplicated_any_address')}; "
        f"possible duplicates logged {f.get('possible_duplicates_logged')}, "
        f"copies not logged as possible duplicates {f.get('duplicates_not_logged')})",
        f"  notifier rolling update        {f.get('notifier_rolling_update_seconds')} s "
        f"(old replicas gone after {f.get('notifier_old_replicas_stopped_seconds')} s)",
        f"  notifier SIGKILL -> 3 running  {f.get('notifier_kill_replacement_seconds')} s",
        f"  notifier scale 3 -> 1 -> 3     {f.get('notifier_scale_down_seconds')} s, "
        f"{f.get('notifier_scale_up_seconds')} s",
        *(f"  PROBLEM: {problem}" for problem in run.problems),
    ]
    print("\n".join(lines), file=out, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="herald-swarm", description=__doc__)
    parser.add_argument("--signups-per-second", type=float, default=3.0)
    args, pytest_args = parser.parse_known_args()
    if not engine_answers():
        print("[swarm] skipped: no Docker engine answers (`docker info` failed)", flush=True)
        sys.exit(0)
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    run_id = uuid.uuid4().hex[:8]
    log_dir = ROOT / ".e2e" / run_id
    log_dir.mkdir(parents=True)
    run = Run(run_id=run_id, log_dir=log_dir, env=stack_env())
    run.figures |= {"run_id": run_id, "stack": run.stack}
    started = time.monotonic()
    try:
        build_images(run)
        with swarm(run):
            try:
                deploy(run)
                with followed_logs(run):
                    exercise(run, args.signups_per_second, pytest_args)
            finally:
                remove_stack(run)
    except (Exception, KeyboardInterrupt) as exc:
        run.problems.append(f"{type(exc).__name__}: {exc}")
    finally:
        with contextlib.suppress(Exception):
            docker("rmi", run.rolled_image)
        run.figures["wall_seconds"] = round(time.monotonic() - started, 1)
        run.figures["problems"] = run.problems
        (log_dir / "swarm.json").write_text(json.dumps(run.figures, indent=2) + "\n")
        report(run)
        say(f"logs and figures: {log_dir}")
    sys.exit(1 if run.problems else 0)


if __name__ == "__main__":
    main()
