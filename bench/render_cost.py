"""CPU per email of the notifier's renderer: templates, ``EmailMessage`` and its bytes.

    uv run --group bench python -m bench.render_cost

``make bench`` prints it under item 3 (``measure``): one email of each kind of
the catalogue, for three display names (plain, non-ASCII, quoted), rendered
and serialized by ``herald_notifier.render.Renderer.render`` in this process,
one thread; the median per email of a few repeats.
"""

from __future__ import annotations

import statistics
import time
from email.headerregistry import Address

from pydantic import SecretStr

from herald_notifier.render import Renderer
from herald_shared.messages import AccountEmail
from herald_testing.messages import EMAILS

NAMES = ("Bench User", "Zoë Ørsted", 'Zoë "Zed" O\'Brien')
MAKERS = tuple(EMAILS.values())


def emails() -> list[AccountEmail]:
    """One message of each kind for each of ``NAMES``."""
    return [
        make(email=f"user{i}@example.com", display_name=name)
        for name in NAMES
        for i, make in enumerate(MAKERS)
    ]


def measure(*, rounds: int = 20, repeats: int = 5) -> float:
    """Median seconds per email over ``repeats`` runs of ``rounds`` x ``emails()``."""
    renderer = Renderer(
        Address("Herald", addr_spec="no-reply@herald.example.org"),
        link_secret=SecretStr("bench-link-secret-of-at-least-32-characters"),
        verify_url="https://herald.example.org/verify-email",
        reset_url="https://herald.example.org/reset-password",
    )
    messages = emails()
    for message in messages:  # warm-up: templates, header classes
        renderer.render(message)
    per_email = []
    for _ in range(repeats):
        began = time.perf_counter()
        for _ in range(rounds):
            for message in messages:
                renderer.render(message)
        per_email.append((time.perf_counter() - began) / (rounds * len(messages)))
    return statistics.median(per_email)


if __name__ == "__main__":
    print(f"{measure() * 1000:.2f} ms per email")
