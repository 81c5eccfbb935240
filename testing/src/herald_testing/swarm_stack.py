"""A Herald stack on a one-node Docker Swarm, for one ``make swarm-e2e`` run.

Its names (``herald-swarm-<id>``), its environment (fresh secrets, test limits),
the swarm it runs in (made and left by the run, or one found and left as found),
its deploy (until every service runs healthy), its logs followed into the run's
log directory, and its removal with everything Swarm leaves behind.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from herald_testing.stack import LOAD_RATE_LIMITS, ROOT, random_secrets
from herald_testing.swarm_docker import (
    DockerError,
    docker,
    ipv4_port,
    job_completed,
    running,
    swarm_state,
    wait_until,
)

STACK_FILE = ROOT / "deploy" / "swarm" / "stack.yaml"
COMPOSE_BUILD = ("docker", "compose", "-f", str(ROOT / "compose.yaml"), "build", "--quiet")
IMAGE_TAG = "swarm"
REPLICAS = {"postgres": 1, "redis": 1, "maildev": 1, "api": 2, "notifier": 3, "scheduler": 2}
JOBS = ("migrate",)
STACK_LABEL = "com.docker.stack.namespace"
FOLLOW_LOGS = ("docker", "service", "logs", "--follow", "--no-trunc", "--timestamps")
NOTIFIER_GRACE_SECONDS = 5
"""The notifier's shutdown grace in this run (stop_grace_period is 30 s): a rolling
update's old replicas stop sooner, and the rule grace + 1 s < 30 s still holds."""
CONVERGE_SECONDS = 240.0


def say(message: str) -> None:
    print(f"[swarm] {message}", flush=True)


@dataclass
class Run:
    """One run's names, its stack's environment and what it measured."""

    run_id: str
    log_dir: Path
    env: dict[str, str]
    figures: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def stack(self) -> str:
        return f"herald-swarm-{self.run_id}"

    @property
    def rolled_image(self) -> str:
        return f"herald-notifier:{IMAGE_TAG}-rolled-{self.run_id}"

    def service(self, name: str) -> str:
        return f"{self.stack}_{name}"


def stack_env() -> dict[str, str]:
    """The variables the stack file is interpolated with: fresh secrets, test limits."""
    return (
        dict(os.environ)
        | random_secrets()
        | LOAD_RATE_LIMITS
        | {
            "HERALD_IMAGE_TAG": IMAGE_TAG,
            "POSTGRES_PASSWORD": uuid.uuid4().hex,
            "HERALD_NOTIFIER_SHUTDOWN_GRACE_SECONDS": str(NOTIFIER_GRACE_SECONDS),
            "HERALD_QUEUE_REPORT_CRON": "* * * * * */2",
            # The API lets an attempt through unchecked when Redis takes longer than
            # this (0.25 s by default). On a busy 2-core node running 11 containers and
            # the suite, it sometimes does (48 times in one run): the suite's
            # rate-limit test then saw its 4th resend pass. It asserts the limit, not
            # the latency, so the run gives Redis longer.
            "HERALD_RATE_LIMIT_TIMEOUT_SECONDS": "2",
        }
    )


@contextlib.contextmanager
def swarm(run: Run) -> Iterator[None]:
    """In a swarm for the block: this run's own (left afterwards) or one found."""
    state, manager = swarm_state()
    had_gwbridge = bool(docker("network", "ls", "-q", "--filter", "name=^docker_gwbridge$"))
    if state == "inactive":
        docker("swarm", "init", "--advertise-addr", "127.0.0.1")
        run.figures["swarm"] = "initialised by this run"
    elif state == "active" and manager:
        run.figures["swarm"] = "already a manager: used and left as found"
    else:
        raise RuntimeError(f"this engine is in a swarm as {state}, not a manager: cannot deploy")
    say(f"swarm: {run.figures['swarm']}")
    try:
        yield
    finally:
        if state == "inactive":
            docker("swarm", "leave", "--force", timeout=120)
            if not had_gwbridge:
                with contextlib.suppress(Exception):
                    docker("network", "rm", "docker_gwbridge")
            say("left the swarm this run had made")


def build_images(run: Run) -> None:
    started = time.monotonic()
    subprocess.run(
        [*COMPOSE_BUILD, "api", "notifier", "scheduler"],
        env=run.env,
        check=True,
        cwd=ROOT,
    )
    docker("tag", f"herald-notifier:{IMAGE_TAG}", run.rolled_image)
    run.figures["build_seconds"] = round(time.monotonic() - started, 1)
    say(f"images herald-{{api,notifier,scheduler}}:{IMAGE_TAG} built")


def converged(run: Run) -> bool:
    if not all(job_completed(run.service(job)) for job in JOBS):
        return False
    return all(len(running(run.service(name))) == n for name, n in REPLICAS.items())


def deploy(run: Run) -> None:
    started = time.monotonic()
    docker(
        "stack", "deploy", "--resolve-image", "never", "--detach=true", "-c", str(STACK_FILE),
        run.stack, env=run.env,
    )  # fmt: skip
    wait_until(
        lambda: converged(run), "every service running healthy", within=CONVERGE_SECONDS, every=2
    )
    run.figures["deploy_seconds"] = round(time.monotonic() - started, 1)
    say(f"stack {run.stack} up in {run.figures['deploy_seconds']} s: {REPLICAS}")


def host_urls(run: Run, service: str) -> list[str]:
    return [f"http://127.0.0.1:{ipv4_port(task)}" for task in running(run.service(service))]


@contextlib.contextmanager
def followed_logs(run: Run) -> Iterator[None]:
    """Every service's log into ``<log dir>/<service>.log``, replaced tasks included,
    and the engine's events of the stack's containers into ``events.log``; at the end
    every service's task history into ``tasks.log``."""
    commands = {name: [*FOLLOW_LOGS, run.service(name)] for name in [*REPLICAS, *JOBS]}
    commands["events"] = ["docker", "events", "--filter", f"label={STACK_LABEL}={run.stack}"]
    followers: list[tuple[subprocess.Popen[bytes], BinaryIO]] = []
    for name, command in commands.items():
        out = (run.log_dir / f"{name}.log").open("wb")
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        followers.append((proc, out))
    try:
        yield
    finally:
        with (run.log_dir / "tasks.log").open("wb") as history:
            for name in [*REPLICAS, *JOBS]:
                command = ["docker", "service", "ps", "--no-trunc", run.service(name)]
                subprocess.run(command, stdout=history, stderr=subprocess.STDOUT, check=False)
        for follower, log_file in followers:
            follower.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                follower.wait(timeout=10)
            log_file.close()


def remove_stack(run: Run) -> None:
    """The stack, its containers (a finished job's stay behind), network and volumes;
    reports what it could not remove instead of raising."""
    label = f"label={STACK_LABEL}={run.stack}"
    steps: list[tuple[str, Callable[[], object]]] = [
        ("stack rm", lambda: docker("stack", "rm", run.stack, timeout=120)),
        (
            "containers gone",
            lambda: wait_until(
                lambda: not docker("ps", "-q", "--filter", label, "--filter", "status=running"),
                "the stack's containers stopped",
                within=90,
                every=1,
            ),
        ),
        ("leftover containers", lambda: remove_leftovers(label)),
        (
            "network gone",
            lambda: wait_until(
                lambda: not docker("network", "ls", "-q", "--filter", label),
                "the stack's network removed",
                within=60,
                every=1,
            ),
        ),
        ("volumes", lambda: remove_volumes(label)),
    ]
    for what, step in steps:
        try:
            step()
        except (DockerError, TimeoutError, subprocess.TimeoutExpired) as exc:
            run.problems.append(f"clean-up, {what}: {exc}")
    say(f"stack {run.stack} removed (containers, network, volumes)")


def remove_leftovers(label: str) -> None:
    """Exited containers Swarm leaves behind (a replicated job's); the others it is
    removing itself, so wait for them."""
    wait_until(
        lambda: not docker("ps", "-aq", "--filter", label, "--filter", "status=removing"),
        "Swarm's own removals done",
        within=60,
        every=1,
    )
    if leftover := docker("ps", "-aq", "--filter", label).split():
        docker("rm", "--force", *leftover)


def remove_volumes(label: str) -> None:
    if volumes := docker("volume", "ls", "-q", "--filter", label).split():
        docker("volume", "rm", *volumes)
