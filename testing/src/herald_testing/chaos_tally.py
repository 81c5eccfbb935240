"""What ``make chaos`` counts after a run, and when a run fails.

- **lost**: accepted signups whose address never got a welcome email;
- **duplicated**: welcome emails beyond the first per address (a retried
  signup's "account exists" notice is another email, not a second welcome);
- **possible duplicates counted**: the notifier's own account of resends it
  could not rule out, counted from its log lines (``POSSIBLE_DUPLICATE_EVENTS``),
  which survive SIGKILLs where its counter restarts from zero;
- **reconciled**: outbox messages the API pushed again because their job had
  vanished from Redis, counted from its log lines (``REPUSHED_EVENTS``).

A run fails on any loss, any signup given up, or more duplicates seen in the
inbox (welcome emails, or any email whose Message-ID arrived twice) than the
notifier counted, or any extra copy of a message for which the notifier
logged no possible duplicate (every duplicate must be accounted for).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

WELCOME_SUBJECT = "Welcome to Herald"
ACCOUNT_EXISTS_SUBJECT = "Someone tried to sign up for Herald with your address"
POSSIBLE_DUPLICATE_EVENTS = frozenset(
    {"email.redelivered_after_crash", "email.redelivered_unconfirmed"}
)
"""The notifier's log events for a send that may repeat an earlier one (handlers.py)."""
REPUSHED_EVENTS = frozenset({"outbox.repushed"})
"""The API's log event for an outbox message pushed again by the reconciliation pass."""


@dataclass(frozen=True)
class Mail:
    """What the inbox holds for the run's addresses."""

    welcomes: Counter[str]
    """Welcome emails per address (lower case)."""
    account_exists: int
    copies: Counter[str]
    """Emails of any kind per Herald message id (the Message-ID's local part)."""
    last_at: datetime | None
    """When the last email arrived."""

    @property
    def resent(self) -> int:
        """Emails, of any kind, beyond the first of their message."""
        return sum(n - 1 for n in self.copies.values())

    def unaccounted(self, counted: Mapping[str, int]) -> Counter[str]:
        """Extra copies of each message beyond what ``counted`` (possible
        duplicates per message id) owns up to."""
        return Counter(
            {
                message_id: n - 1 - counted.get(message_id, 0)
                for message_id, n in self.copies.items()
                if n - 1 > counted.get(message_id, 0)
            }
        )


def read_mail(emails: Iterable[Mapping[str, Any]], addresses: Iterable[str]) -> Mail:
    """Tally MailDev's ``emails`` (its ``GET /email`` items) sent to ``addresses``."""
    wanted = {address.lower() for address in addresses}
    welcomes: Counter[str] = Counter()
    copies: Counter[str] = Counter()
    account_exists = 0
    last_at: datetime | None = None
    for email in emails:
        recipients = {to.get("address", "").lower() for to in email.get("to", [])} & wanted
        if not recipients:
            continue
        subject = email.get("subject")
        if subject == WELCOME_SUBJECT:
            welcomes.update(recipients)
        elif subject == ACCOUNT_EXISTS_SUBJECT:
            account_exists += 1
        if message_id := email.get("messageId"):
            copies[str(message_id).strip("<>").partition("@")[0]] += 1
        if received := email.get("time"):
            at = datetime.fromisoformat(str(received))
            last_at = at if last_at is None else max(last_at, at)
    return Mail(welcomes=welcomes, account_exists=account_exists, copies=copies, last_at=last_at)


def events_by_message(lines: Iterable[Mapping[str, Any]], events: frozenset[str]) -> Counter[str]:
    """How many JSON log ``lines`` are one of ``events``, per ``message_id``
    (``""`` for lines without one)."""
    return Counter(str(line.get("message_id", "")) for line in lines if line.get("event") in events)


@dataclass(frozen=True)
class Figures:
    """One run's figures (or the sum of several)."""

    signups: int
    accepted: int
    failed_signups: int
    retried_signups: int
    server_errors: int
    """Answers 500 the client got on the way (the API must answer 503 or nothing instead)."""
    users_created: int
    welcome_emails: int
    account_exists_notices: int
    lost: int
    duplicated: int
    resent_any_email: int
    unaccounted_duplicates: int
    """Extra copies of a message without a possible-duplicate line for it."""
    possible_duplicates_counted: int
    possible_duplicates_metric: int
    reconciled: int
    reconciled_metric: int
    dead_lettered: int
    killed_mid_sweep: int
    """Notifier replicas SIGKILLed as they swept (the plan asks for one a run)."""
    drain_seconds: float | None
    """Last accepted signup to last email (for a sum: the longest)."""

    def problems(self) -> list[str]:
        """Why this run fails; empty when it passes."""
        found = []
        if self.lost:
            found.append(f"{self.lost} lost")
        if self.failed_signups:
            found.append(f"{self.failed_signups} failed signups")
        if self.server_errors:
            found.append(f"{self.server_errors} answers 500 (an outage must be 503)")
        seen = max(self.duplicated, self.resent_any_email)
        if seen > self.possible_duplicates_counted:
            found.append(f"{seen} duplicates seen but {self.possible_duplicates_counted} counted")
        if self.unaccounted_duplicates:
            found.append(f"{self.unaccounted_duplicates} duplicates not counted for their message")
        return found

    def lines(self) -> list[str]:
        """The report: the four labelled lines the issue names, then the rest."""
        drain = "never (lost)" if self.drain_seconds is None else f"{self.drain_seconds:.1f} s"
        return [
            f"lost {self.lost}",
            f"duplicated {self.duplicated}",
            f"possible duplicates counted {self.possible_duplicates_counted}",
            f"reconciled {self.reconciled}",
            f"failed signups {self.failed_signups}",
            f"signups attempted {self.signups}",
            f"signups answered 202 {self.accepted}",
            f"signups retried {self.retried_signups}",
            f"answers 500 {self.server_errors}",
            f"users created {self.users_created}",
            f"welcome emails received {self.welcome_emails}",
            f"account-exists notices (retried signups) {self.account_exists_notices}",
            f"emails resent with the same Message-ID {self.resent_any_email}",
            f"duplicates not counted for their message {self.unaccounted_duplicates}",
            f"possible duplicates, notifier metric {self.possible_duplicates_metric}",
            f"reconciled, API metric {self.reconciled_metric}",
            f"dead-lettered {self.dead_lettered}",
            f"notifier replicas SIGKILLed mid-sweep {self.killed_mid_sweep}",
            f"drain time (last signup to last email) {drain}",
        ]


def total(runs: Sequence[Figures]) -> Figures:
    """The figures of ``runs`` summed (the drain time: the longest, or never)."""
    sums: dict[str, Any] = {
        f.name: sum(getattr(run, f.name) for run in runs)
        for f in fields(Figures)
        if f.name != "drain_seconds"
    }
    drains = [run.drain_seconds for run in runs]
    longest = None if None in drains or not drains else max(d for d in drains if d is not None)
    return Figures(**sums, drain_seconds=longest)
