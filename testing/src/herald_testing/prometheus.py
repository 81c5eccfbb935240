"""Reading Prometheus counters that a process restart resets.

A SIGKILLed service comes back with its counters at zero, so a figure for a
whole run is the sum, over each container's lifetimes, of the last value read
before it was killed, plus what the live ones say at the end.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families


def sample_sum(exposition: str, sample: str, labels: Mapping[str, str] | None = None) -> float:
    """The sum of every ``sample`` (e.g. ``x_total``) in ``exposition`` whose labels
    include ``labels``; 0 when there is none (a counter not yet incremented)."""
    wanted = dict(labels or {})
    return sum(
        point.value
        for family in text_string_to_metric_families(exposition)
        for point in family.samples
        if point.name == sample and wanted.items() <= point.labels.items()
    )


@dataclass
class CounterAcrossRestarts:
    """One counter summed over container lifetimes (a lower bound: what a killed
    container counted after its last reading is gone with it)."""

    banked: float = 0.0
    live: dict[str, float] = field(default_factory=dict)

    def read(self, container: str, value: float) -> None:
        """``container``'s counter is ``value`` now."""
        self.live[container] = value

    def killed(self, container: str) -> None:
        """``container`` restarts from zero: keep what it had counted."""
        self.banked += self.live.pop(container, 0.0)

    @property
    def total(self) -> float:
        return self.banked + sum(self.live.values())
