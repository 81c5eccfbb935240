"""``docker compose`` on a running Herald stack, for the deployment tests."""

from __future__ import annotations

import contextlib
import json
import subprocess
from typing import Any

from herald_testing.stack import compose_command


class Compose:
    """``docker compose`` on the stack under test (``make e2e STACK=compose`` only)."""

    def __init__(self, project: str) -> None:
        self.command = compose_command(project)

    def __call__(self, *args: str, timeout: float = 300) -> str:
        result = subprocess.run(
            [*self.command, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            raise AssertionError(f"docker compose {' '.join(args)} failed:\n{result.stderr}")
        return result.stdout

    def json_logs(self, *services: str) -> list[dict[str, Any]]:
        """Every JSON log line of ``services``, with the service name compose gave it."""
        lines = []
        for raw in self("logs", "--no-color", "--no-log-prefix", *services).splitlines():
            with contextlib.suppress(ValueError):
                line = json.loads(raw)
                if isinstance(line, dict):
                    lines.append(line)
        return lines

    def scale(self, service: str, replicas: int) -> None:
        self(
            "up", "--detach", "--wait", "--no-recreate", "--scale", f"{service}={replicas}", service
        )
