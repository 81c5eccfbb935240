"""py-spy recordings of running benchmark processes (``python -m bench --profile``)."""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path

from bench.common import BIN, Processes

RATE = 100
"""Samples per second; py-spy runs in its own process on the same 2 cores."""


def keep_py_spy(log_dir: Path) -> None:
    """Copy py-spy (one static binary) next to the logs: a ``uv sync`` of the shared
    environment during the run removes it from ``.venv`` (it is in the bench group only)."""
    shutil.copy2(BIN / "py-spy", log_dir / "py-spy")


def start_recording(procs: Processes, name: str, pid: int, output: Path) -> str:
    """Start ``py-spy record`` on ``pid`` (raw collapsed stacks); the recorder's name.

    ``--nonblocking``: the target is never paused to be sampled (less
    distortion, at the price of a rare torn stack). Retried: py-spy sometimes
    fails to read a process's Python version on its first look.
    """
    recorder = f"py-spy-{name}"
    for _ in range(5):
        procs.start(
            recorder,
            str(procs.log_dir / "py-spy"),
            "record",
            "--pid",
            str(pid),
            "--rate",
            str(RATE),
            "--format",
            "raw",
            "--output",
            str(output),
            "--nonblocking",
            "--threads",
            "--nolineno",
            "--full-filenames",
        )
        try:
            procs.wait_log(recorder, "Sampling process", within=10)
        except RuntimeError:
            procs.stop(recorder)
            time.sleep(0.5)
            continue
        return recorder
    raise RuntimeError(f"py-spy could not attach to {name} (pid {pid}); see {procs.log(recorder)}")


def stop_recording(procs: Processes, recorder: str, output: Path) -> None:
    """Stop ``recorder`` (SIGINT: py-spy writes its output and exits)."""
    procs.stop(recorder, sig=signal.SIGINT)
    if not output.exists():
        raise RuntimeError(f"{recorder} wrote no {output}; see {procs.log(recorder)}")
