"""Call-next rules, pure: which waiting ticket a counter calls now (aging, appointments,
priority ratio, service order, citizens held at another booth). Not yet wired into the queue's
use cases: the next step of the queue issue."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class Waiting:
    """A ticket that could be called: its line, when it joined the queue, and its claims."""

    ticket_id: str
    request_id: str  # one citizen's visit; several tickets at a multi-booth fair
    service: str
    queued_at: datetime  # arrival (check-in for appointments)
    priority: bool = False  # lansia, disability, pregnancy, parent with infant
    appointment_at: datetime | None = None  # booked slot start (checked in)


@dataclass(frozen=True)
class CallPolicy:
    # One priority call after every `normal_per_priority` normal calls, when both are waiting.
    normal_per_priority: int = 3
    # Aging: a ticket waiting this long goes ahead of every rule below, oldest first; this is
    # what bounds every wait (see `starvation_bound`).
    max_wait: timedelta = timedelta(minutes=45)
    # Checked-in appointment holders go first from their slot until slot + grace.
    appointment_grace: timedelta = timedelta(minutes=10)
    # A counter prefers its first services: waited time counts this much less per position.
    order_discount: float = 0.25


@dataclass(frozen=True)
class CounterMemory:
    """What a counter remembers between calls: normal calls since its last priority call."""

    normal_since_priority: int = 0

    def after(self, called: Waiting) -> CounterMemory:
        return CounterMemory(0 if called.priority else self.normal_since_priority + 1)


def choose(
    waiting: Iterable[Waiting],
    services: Sequence[str],
    busy_requests: set[str],
    memory: CounterMemory,
    now: datetime,
    policy: CallPolicy,
) -> Waiting | None:
    """The ticket a counter serving `services` (in its order) calls at `now`, or None.

    Never a ticket of a citizen being served at another booth (`busy_requests`): their other
    tickets are held, keeping their place, until that service completes."""
    order = {service: i for i, service in enumerate(services)}
    eligible = [t for t in waiting if t.service in order and t.request_id not in busy_requests]
    if not eligible:
        return None
    by_arrival = sorted(eligible, key=lambda t: (t.queued_at, t.ticket_id))
    aged = [t for t in by_arrival if now - t.queued_at >= policy.max_wait]
    if aged:
        return aged[0]
    due = [
        t
        for t in eligible
        if t.appointment_at is not None
        and t.appointment_at <= now <= t.appointment_at + policy.appointment_grace
    ]
    if due:
        return min(due, key=lambda t: (t.appointment_at or now, t.queued_at, t.ticket_id))
    priority = [t for t in by_arrival if t.priority]
    normal = [t for t in by_arrival if not t.priority]
    if priority and (not normal or memory.normal_since_priority >= policy.normal_per_priority):
        return priority[0]

    def weighted_wait(t: Waiting) -> float:
        waited = (now - t.queued_at).total_seconds()
        return waited / (1 + policy.order_discount * order[t.service])

    return max(normal, key=lambda t: (weighted_wait(t), -t.queued_at.timestamp(), t.ticket_id))


def starvation_bound(policy: CallPolicy) -> str:
    """The guarantee, in words, for the README and the closing note."""
    return (
        f"A ticket that has waited {policy.max_wait} is called before every ticket that joined "
        "after it, at any counter serving its line, as soon as its citizen is not at another "
        "booth: it waits at most max_wait plus the calls owed to tickets that joined before it."
    )
