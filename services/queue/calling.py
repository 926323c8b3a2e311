"""Pure decisions of a call at a counter (ADR 0161): whether the counter is free, busy, or holds
a reservation to complete, and what a lost ticket write means. No I/O: the desk loads what they
read, decides with them, and saves once."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from giliran.contracts import TicketStatus

BUSY_STATUSES = frozenset({TicketStatus.CALLED, TicketStatus.SERVING})


@dataclass(frozen=True)
class TicketAt:
    """What the call decisions read of a ticket."""

    site: str
    status: TicketStatus
    counter: str | None
    arrived: bool = True
    # Whether its request has (or had) other tickets: only then do its calls take the
    # request's serving slot (ADR 0190).
    shared: bool = True


def needs_slot(ticket: TicketAt) -> bool:
    """Whether calling `ticket` takes its request's serving slot first (ADR 0190). The slot
    keeps one citizen at one counter at a time; a ticket alone in its request cannot be at two
    counters, its own conditional write from waiting to called lets only one call have it."""
    return ticket.shared


class CounterStatus(StrEnum):
    OPEN = "open"
    PAUSED = "paused"
    CLOSED = "closed"


@dataclass(frozen=True)
class CounterState:
    """A counter as a call reads it: the aggregate whose revision orders calls (ADR 0161)."""

    counter: str
    status: CounterStatus
    session_id: str | None
    services: tuple[str, ...]
    revision: int
    current: str | None = None
    normal_since_priority: int = 0
    pinned: bool = False


class CounterNow(StrEnum):
    FREE = "free"  # nothing called or served here: a call may reserve the counter
    BUSY = "busy"  # its ticket is called or served here
    RESERVED = "reserved"  # reserved for a ticket still waiting: complete that call first


def counter_now(site: str, counter: str, current: TicketAt | None) -> CounterNow:
    """The state of a counter from the ticket called there last (None: none). Only that ticket
    can be seated there (ADR 0203: a counter calls again only once its seat is free); one of
    another site, or that moved elsewhere or on, means nothing. (A waiting one is the pointer
    of a reservation, ADR 0161, made by code before ADR 0203; the desk no longer asks.)"""
    if current is None or current.site != site:
        return CounterNow.FREE
    if current.status == TicketStatus.WAITING:
        return CounterNow.RESERVED if current.arrived else CounterNow.FREE
    if current.status in BUSY_STATUSES and current.counter == counter:
        return CounterNow.BUSY
    return CounterNow.FREE


class LostCall(StrEnum):
    CALLED_HERE = "called_here"  # the same reservation, completed by another instance: our call
    TAKEN = "taken"  # another counter called it: its citizen's slot is that call's
    GONE = "gone"  # it left the line otherwise (cancelled...): free its citizen's slot
    # It still waits: what the call read of it changed (its request got another ticket, so
    # it must now be called under the serving slot, ADR 0190): decide again from the store.
    CHANGED = "changed"
    # It still waits as the call read it: the counter's seat was another ticket's (ADR 0203),
    # the counter is busy with another call.
    SEAT_TAKEN = "seat_taken"


def after_lost_call(counter: str, now: TicketAt | None, *, called_alone: bool = True) -> LostCall:
    """What a call whose conditional ticket write failed means, from the ticket as it is now
    and whether the call was made without the serving slot, on condition that the ticket was
    still alone in its request (ADR 0190)."""
    if now is not None and now.status in BUSY_STATUSES:
        return LostCall.CALLED_HERE if now.counter == counter else LostCall.TAKEN
    if now is not None and now.status == TicketStatus.WAITING:
        # Only a call that counted on the ticket being alone can have lost to its flag.
        return LostCall.CHANGED if called_alone and now.shared else LostCall.SEAT_TAKEN
    return LostCall.GONE


class Sharing(StrEnum):
    """What a ticket alone in its request needs when the request gets another ticket, so that
    from then on its calls take the request's serving slot (ADR 0190)."""

    NOTHING = "nothing"  # shared already, or finished (no slot was given to it)
    FLAG = "flag"  # it waits: flag it shared, on condition it still waits
    SLOT_THEN_FLAG = "slot_then_flag"  # at a counter: give it the slot, then flag it (ditto)
    FREE_SLOT = "free_slot"  # given the slot, it finished before it was flagged: free the slot


def sharing(now: TicketAt | None, *, slot_given: bool) -> Sharing:
    """The next step of sharing a ticket's request, from the ticket as it is now (None: gone)
    and whether this sharing gave it the slot already. A finished ticket that was flagged in
    time frees the slot itself (its completion reads the flag from its own write)."""
    if now is not None and now.shared:
        return Sharing.NOTHING
    if now is not None and now.status == TicketStatus.WAITING:
        return Sharing.FLAG
    if now is not None and now.status in BUSY_STATUSES:
        return Sharing.SLOT_THEN_FLAG
    return Sharing.FREE_SLOT if slot_given else Sharing.NOTHING
