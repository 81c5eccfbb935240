"""``bench/results.json``: the run's figures, machine-readable (docs/benchmarks.md lists the keys).

Each item adds its figures as it measures them (``Results.add`` or, for an item
in a module of its own that returns ``dict[str, float]``, ``Results.update``).
The file holds every figure measured, each a finite number (a bool, a string,
NaN or a key given twice is refused when added, so a wrong value fails the run
where it is made), plus:

- ``missing``: the keys of ``REQUIRED`` that this run did not measure (an item
  not run, or a figure with nothing to measure, such as the shed p99 when
  nothing was shed); empty when the run is complete. A reader that needs a
  key checks it is not listed here rather than trusting its absence;
- ``run``: what ran (``quick`` or ``full``, the commit, the machine, when).

The file is written whole or not at all (a temporary file, then a rename).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REQUIRED = (
    "hash_ms",
    "signup_c1_p50_ms",
    "signup_c8_per_s",
    "api_overhead_ms",
    "overload_c256_accepted_p99_ms",
    "overload_c256_shed_fraction",
    "overload_c256_shed_p99_ms",
    "redis_bytes_per_email",
    "redis_pii_seconds_after_send",
    "size_signup_p50_ratio",
    "size_login_p50_ratio",
    "size_delete_p50_ratio",
    "size_purge_p50_ratio",
    "notifier_emails_per_s",
    "notifier_vs_arq",
    "e2e_p50_ms",
    "e2e_p99_ms",
)
"""The keys issue 13 asks for; a run that did not measure one lists it in ``missing``."""

RESERVED = ("missing", "run")


class Results:
    def __init__(self) -> None:
        self.figures: dict[str, float] = {}

    def add(self, **figures: float | None) -> None:
        """Record ``figures``; a None value means "nothing to measure" and is left out
        (the key is then in ``missing`` if it is required)."""
        for key, value in figures.items():
            if value is None:
                continue
            if key in RESERVED or key in self.figures:
                raise ValueError(f"results: {key!r} given twice or reserved")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"results: {key} = {value!r} is not a number")
            if not math.isfinite(value):
                raise ValueError(f"results: {key} = {value!r} is not finite")
            self.figures[key] = value

    def update(self, figures: Mapping[str, float]) -> None:
        """Record a whole item's figures (``bench.size.measure_size(...)`` and the like)."""
        self.add(**figures)

    def missing(self) -> list[str]:
        return [key for key in REQUIRED if key not in self.figures]

    def document(self, run: Mapping[str, Any]) -> dict[str, Any]:
        figures = {key: round(value, 3) for key, value in sorted(self.figures.items())}
        return {**figures, "missing": self.missing(), "run": dict(run)}

    def write(self, path: Path, run: Mapping[str, Any]) -> None:
        text = json.dumps(self.document(run), indent=2, allow_nan=False) + "\n"
        partial = path.with_name(f".{path.name}.partial")
        partial.write_text(text)
        os.replace(partial, path)
