"""When ``make chaos`` hurts the stack: one fault plan per run, drawn from a seed.

Every fault fires when a share of the run's signups has finished (a point of
progress, not of time, so a slow machine sees the same schedule), and how long
an outage lasts is drawn too. The same seed gives the same plan, so a run that
found something can be repeated: ``make chaos SEED=<seed>``; run ``i`` of a
``--runs`` series uses ``seed + i``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

SMTP_REFUSE_RATIO = 0.2
"""Share of messages the SMTP relay refuses with 451, throughout every run."""
SMTP_DELAY_SECONDS = 0.2
"""How long the relay takes to answer a message's final ".": a send is in flight
long enough for a SIGKILL to find some (with instant answers an idle moment is
likely, and then a kill leaves nothing to sweep)."""


@dataclass(frozen=True)
class FaultPlan:
    """The faults of one run; each ``*_at`` is a share (0..1) of signups finished."""

    seed: int
    redis_stop_at: float
    redis_down_seconds: float
    api_kill_at: float
    postgres_restart_at: float
    notifier_kill_at: float
    """Every notifier replica SIGKILLed at once, then started again."""
    sweeper_kill_at: float
    """One replica SIGKILLed; the other is SIGKILLed as soon as it logs that it
    sweeps the first one's jobs; then both are started again."""
    first_replica: int
    """Which replica (1 or 2) the sweeper kill takes down first."""

    def describe(self) -> str:
        """One line per fault, for the run's report."""
        return "\n".join(
            (
                f"  Redis stopped at {self.redis_stop_at:.0%} of signups for "
                f"{self.redis_down_seconds:.1f} s",
                f"  API SIGKILLed at {self.api_kill_at:.0%}, started again",
                f"  PostgreSQL restarted at {self.postgres_restart_at:.0%}",
                f"  both notifier replicas SIGKILLed at {self.notifier_kill_at:.0%}",
                f"  notifier-{self.first_replica} SIGKILLed at {self.sweeper_kill_at:.0%}, "
                "its sibling SIGKILLed as it sweeps",
                f"  SMTP relay refusing {SMTP_REFUSE_RATIO:.0%} with 451 throughout, "
                f"answering after {SMTP_DELAY_SECONDS:.1f} s",
            )
        )


def draw(seed: int) -> FaultPlan:
    """The fault plan of ``seed``: always the same for the same seed."""
    rng = random.Random(seed)
    return FaultPlan(
        seed=seed,
        redis_stop_at=round(rng.uniform(0.05, 0.6), 3),
        redis_down_seconds=round(rng.uniform(5.0, 20.0), 1),
        api_kill_at=round(rng.uniform(0.1, 0.9), 3),
        postgres_restart_at=round(rng.uniform(0.1, 0.9), 3),
        notifier_kill_at=round(rng.uniform(0.15, 0.85), 3),
        sweeper_kill_at=round(rng.uniform(0.15, 0.85), 3),
        first_replica=rng.choice((1, 2)),
    )
