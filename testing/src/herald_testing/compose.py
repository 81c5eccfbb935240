"""``docker compose`` on a running Herald stack, for the deployment and fault tests."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Mapping
from typing import Any

from herald_testing.stack import compose_command


class Compose:
    """``docker compose`` on the stack under test (``make e2e STACK=compose``, ``make chaos``)."""

    def __init__(self, project: str, *, env: Mapping[str, str] | None = None) -> None:
        self.command = compose_command(project)
        # Every call interpolates compose.yaml with the same variables, or compose
        # would see a changed configuration and recreate containers.
        self.env = dict(env if env is not None else os.environ)

    def __call__(
        self, *args: str, timeout: float = 300, env: Mapping[str, str] | None = None
    ) -> str:
        result = subprocess.run(
            [*self.command, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=self.env | dict(env or {}),
        )
        if result.returncode != 0:
            raise AssertionError(f"docker compose {' '.join(args)} failed:\n{result.stderr}")
        return result.stdout

    def json_logs(self, *services: str) -> list[dict[str, Any]]:
        """Every JSON log line of ``services``."""
        lines = []
        for raw in self("logs", "--no-color", "--no-log-prefix", *services).splitlines():
            with contextlib.suppress(ValueError):
                line = json.loads(raw)
                if isinstance(line, dict):
                    lines.append(line)
        return lines

    def scale(self, service: str, replicas: int) -> None:
        self("up", "--detach", "--wait", "--no-recreate", f"--scale={service}={replicas}", service)

    def sql(self, query: str) -> str:
        """Run ``query`` in the stack's accounts database; its unaligned output."""
        return self(
            "exec", "-T", "postgres", "psql", "-U", "herald", "-d", "herald", "-tAc", query
        ).strip()

    def set_smtp_refuse_ratio(self, ratio: float) -> None:
        """Make the fault overlay's SMTP relay refuse ``ratio`` of messages with 4xx."""
        self("exec", "-T", "flaky-smtp", "sh", "-c", f"echo {ratio} > /tmp/refuse-ratio")

    def dead_letters(self) -> list[dict[str, Any]]:
        """The notifier's dead letters, as ``herald-notifier dead-letters list --json`` prints."""
        out = self("exec", "-T", "notifier", "herald-notifier", "dead-letters", "list", "--json")
        return [json.loads(line) for line in out.splitlines() if line.strip()]
