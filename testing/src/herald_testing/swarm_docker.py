"""The Docker CLI on a Swarm stack, as ``make swarm-e2e`` reads and drives it.

Tasks are read with ``docker service ps`` and ``docker inspect`` (a task's
state, its container, the host ports Docker gave it); the lines of
``docker service logs`` are credited to the task that wrote them.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any


class DockerError(RuntimeError):
    """A ``docker`` command failed; the message holds its stderr."""


def docker(*args: str, timeout: float = 120, env: Mapping[str, str] | None = None) -> str:
    """Run ``docker args...``; its stdout. Raises ``DockerError`` on a non-zero exit."""
    result = subprocess.run(
        ["docker", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=None if env is None else dict(env),
    )
    if result.returncode != 0:
        raise DockerError(f"docker {' '.join(args)} failed:\n{result.stderr.strip()}")
    return result.stdout


def engine_answers() -> bool:
    """Whether a Docker engine answers ``docker info``."""
    try:
        docker("info", "--format", "{{.ServerVersion}}", timeout=30)
    except (DockerError, OSError, subprocess.TimeoutExpired):
        return False
    return True


def swarm_state() -> tuple[str, bool]:
    """This engine's swarm membership (``inactive``, ``active``, ``pending``, ...)
    and whether it is a manager."""
    state, manager = (
        docker("info", "--format", "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}")
        .strip()
        .split()
    )
    return state, manager == "true"


@dataclass(frozen=True)
class Task:
    """One task of a service, as ``docker inspect`` shows it."""

    id: str
    slot: int
    state: str
    image: str
    container: str
    ports: tuple[int, ...]
    """Host ports Docker published this task on (host mode)."""

    @property
    def label(self) -> str:
        return f"{self.slot}.{self.id[:12]}"


def _task(raw: Mapping[str, Any]) -> Task:
    status = raw.get("Status", {})
    ports = (status.get("PortStatus") or {}).get("Ports") or []
    return Task(
        id=str(raw["ID"]),
        slot=int(raw.get("Slot", 0)),
        state=str(status.get("State", "")),
        image=str(raw["Spec"]["ContainerSpec"]["Image"]),
        container=str((status.get("ContainerStatus") or {}).get("ContainerID", "")),
        ports=tuple(sorted({int(port["PublishedPort"]) for port in ports})),
    )


def tasks(service: str) -> list[Task]:
    """The tasks of ``service`` that Swarm wants running (whatever their state now)."""
    ids = docker(
        "service", "ps", "--quiet", "--no-trunc", "--filter", "desired-state=running", service
    ).split()
    if not ids:
        return []
    try:
        found = json.loads(docker("inspect", "--type", "task", *ids))
    except DockerError:
        return []  # a task vanished between the two calls: the caller asks again
    return sorted((_task(raw) for raw in found), key=lambda task: task.slot)


def healthy(container: str) -> bool:
    """Whether ``container`` runs and its healthcheck (if any) says healthy."""
    try:
        state = json.loads(docker("inspect", "--type", "container", container))[0]["State"]
    except (DockerError, IndexError, KeyError):
        return False
    health = state.get("Health")
    return bool(state.get("Running")) and (health is None or health.get("Status") == "healthy")


def ipv4_port(task: Task) -> int:
    """The host port ``task`` answers on at 127.0.0.1.

    Swarm's task status lists every published port without its address, and on
    a host with IPv6 Docker picks one port for 0.0.0.0 and another for ``[::]``,
    in a pool every service shares: a service's IPv6 port may be another's IPv4
    one. The container's own bindings say which is which.
    """
    try:
        raw = docker("inspect", "--type", "container", task.container)
        bindings = json.loads(raw)[0]["NetworkSettings"]["Ports"] or {}
    except (DockerError, IndexError, KeyError):
        bindings = {}
    for published in bindings.values():
        for binding in published or ():
            if ":" not in binding.get("HostIp", ""):
                return int(binding["HostPort"])
    raise DockerError(f"task {task.label} has no IPv4 host port: {task.ports}")


def running(service: str) -> list[Task]:
    """The tasks of ``service`` that run, healthy."""
    return [
        task
        for task in tasks(service)
        if task.state == "running" and task.container and healthy(task.container)
    ]


def job_completed(service: str) -> bool:
    """Whether the replicated job ``service`` has a task that completed."""
    states = docker("service", "ps", "--format", "{{.CurrentState}}", service).splitlines()
    return any(state.startswith("Complete") for state in states)


def wait_until(
    check: Callable[[], object], what: str, *, within: float, every: float = 0.5
) -> float:
    """Poll ``check()`` until truthy; the seconds it took. ``TimeoutError`` names ``what``."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > within:
            raise TimeoutError(f"not within {within:.0f} s: {what}")
        time.sleep(every)
    return time.monotonic() - started


def json_lines_by_task(logs: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(task id, line)`` for each JSON line of ``docker service logs`` output (each
    line prefixed ``[<timestamp> ]<service>.<slot>.<task id>@<node> | ``)."""
    for raw in logs.splitlines():
        prefix, bar, line = raw.partition("|")
        if not bar:
            continue
        # "<stack>_<service>.<slot>.<task id>@<node>"
        task = prefix.strip().rpartition("@")[0].rpartition(".")[2]
        try:
            parsed = json.loads(line)
        except ValueError:
            continue
        if isinstance(parsed, dict):
            yield task, parsed
