"""What each event adds to the report cells (site, day, session, service, hour, counter), and how
cells add up again: pure rules, no I/O. Cells hold counts and sketches, never a citizen's data."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict

from giliran.contracts import (
    RequestSubmitted,
    TicketCalled,
    TicketCancelled,
    TicketCompleted,
    TicketFacts,
    TicketIssued,
    TicketNoShow,
    TicketStarted,
    TicketTransferred,
)
from giliran.contracts.events import DeliveryOutcome, RequestCheckedIn
from giliran.store import Instant
from services.reporting import sketch
from services.reporting.domain import local_day

# Sketches a ticket cell keeps under "sketch" (seconds): wait = queued (check-in, or issue) ->
# call; service = call -> complete; eta = |actual call - quoted call|.
WAIT, SERVICE, ETA = "wait", "service", "eta"
ETA_WINDOW_SECONDS = 600.0  # "within ±10 minutes" (issue #6)
ISSUE_TIME = ""  # the counter of a cell holding what is known before any counter touched a ticket


@dataclass(frozen=True)
class CellKey:
    """Where a fact is counted. Figures known at issue (issued, cancelled, ETA) go to the cell
    with counter ISSUE_TIME; figures of the call onward go to the calling counter's cell; the
    hour is the site-local hour the ticket was issued, so every fact of a ticket shares it."""

    site: str
    day: str
    session_id: str
    service: str
    hour: str
    counter: str = ISSUE_TIME

    @property
    def id(self) -> str:
        return "|".join((self.site, self.day, self.session_id, self.service, self.hour,
                         self.counter))  # fmt: skip

    def fields(self) -> dict[str, str]:
        return {"site": self.site, "day": self.day, "session_id": self.session_id,
                "service": self.service, "hour": self.hour, "counter": self.counter}  # fmt: skip


@dataclass(frozen=True)
class RequestCellKey:
    """Requests per site, local day, session and channel (channel "" for check-ins)."""

    site: str
    day: str
    session_id: str
    channel: str

    @property
    def id(self) -> str:
        return "|".join((self.site, self.day, self.session_id, self.channel))

    def fields(self) -> dict[str, str]:
        return {"site": self.site, "day": self.day, "session_id": self.session_id,
                "channel": self.channel}  # fmt: skip


@dataclass(frozen=True)
class NotificationCellKey:
    """Notifications per site, local day, channel and site-local hour of their outcome (sent or
    failed). The hour keeps a cell's per-fact marks to one hour of one channel, as a ticket
    cell's are (docs/decisions/0224-notification-figures-from-cells.md)."""

    site: str
    day: str
    channel: str
    hour: str

    @property
    def id(self) -> str:
        return "|".join((self.site, self.day, self.channel, self.hour))

    def fields(self) -> dict[str, str]:
        return {"site": self.site, "day": self.day, "channel": self.channel, "hour": self.hour}


AnyCellKey = CellKey | RequestCellKey | NotificationCellKey


@dataclass(frozen=True)
class Contribution:
    """One fact of one ticket or request, counted once into one cell: `name` is what makes it
    once (the owner document remembers which names it has counted)."""

    name: str
    cell: AnyCellKey
    counts: Mapping[str, int] = field(default_factory=dict)
    samples: Mapping[str, float] = field(default_factory=dict)  # sketch -> seconds
    sums_ms: Mapping[str, int] = field(default_factory=dict)  # signed sums, integer ms

    def update(self) -> dict[str, dict[str, Any]]:
        """The contribution as MongoDB update operators on the cell document."""
        inc: dict[str, Any] = {f"n.{k}": v for k, v in self.counts.items()}
        inc.update({f"sum_ms.{k}": v for k, v in self.sums_ms.items()})
        low: dict[str, float] = {}
        high: dict[str, float] = {}
        for name, seconds in self.samples.items():
            fields, value = sketch.increments(f"sketch.{name}", seconds)
            inc.update(fields)
            low[f"sketch.{name}.min"] = value
            high[f"sketch.{name}.max"] = value
        update: dict[str, dict[str, Any]] = {"$inc": inc}
        if low:
            update["$min"], update["$max"] = low, high
        return update


@dataclass
class CellUpdate:
    """Every new contribution a batch makes to one cell, as one conditional write: the figures
    added up, and the marks of the facts counted (`marks`: the cell's field names for them)."""

    cell: AnyCellKey
    marks: list[str] = field(default_factory=list)
    contributions: list[Contribution] = field(default_factory=list)

    def update(self) -> dict[str, dict[str, Any]]:
        """The contributions' updates merged: $inc added, $min/$max the extreme, marks $set."""
        inc: dict[str, Any] = {}
        low: dict[str, Any] = {}
        high: dict[str, Any] = {}
        for c in self.contributions:
            one = c.update()
            for path, value in one["$inc"].items():
                inc[path] = inc.get(path, 0) + value
            for path, value in one.get("$min", {}).items():
                low[path] = min(low.get(path, value), value)
            for path, value in one.get("$max", {}).items():
                high[path] = max(high.get(path, value), value)
        update: dict[str, dict[str, Any]] = {"$inc": inc, "$set": dict.fromkeys(self.marks, 1)}
        if low:
            update["$min"], update["$max"] = low, high
        return update

    def split(self, most_paths: int) -> list[CellUpdate]:
        """The same contributions as updates naming at most `most_paths` update paths each
        (every `$inc`, `$set`, `$min` and `$max` field: figures, sketch buckets and marks), in
        order; a contribution is never split (it names a handful of paths)."""
        parts: list[CellUpdate] = []
        current, paths = CellUpdate(self.cell), set[str]()
        for name, c in zip(self.marks, self.contributions, strict=True):
            one = c.update()
            adds = {f"{op}{path}" for op, fields in one.items() for path in fields} | {name}
            if current.marks and len(paths | adds) > most_paths:
                parts.append(current)
                current, paths = CellUpdate(self.cell), set()
            current.marks.append(name)
            current.contributions.append(c)
            paths |= adds
        if current.marks:
            parts.append(current)
        return parts


def combine(
    contributions: Iterable[tuple[str, Contribution]], mark: Callable[[str, str], str]
) -> list[CellUpdate]:
    """Contributions (owner id, contribution) grouped into one update per cell; a fact named
    twice in the batch (a redelivery, or the ETA seen by two events) is counted the first time."""
    cells: dict[str, CellUpdate] = {}
    seen: set[str] = set()
    for owner, c in contributions:
        name = mark(owner, c.name)
        if name in seen:
            continue
        seen.add(name)
        update = cells.setdefault(c.cell.id, CellUpdate(c.cell))
        update.marks.append(name)
        update.contributions.append(c)
    return list(cells.values())


def apply(cell: dict[str, Any], contribution: Contribution) -> None:
    """What `Contribution.update()` does to a cell, on a dict (for in-memory stores in tests)."""
    update = contribution.update()
    for path, value in update["$inc"].items():
        parent, leaf = _walk(cell, path)
        parent[leaf] = parent.get(leaf, 0) + value
    for op, pick in (("$min", min), ("$max", max)):
        for path, value in update.get(op, {}).items():
            parent, leaf = _walk(cell, path)
            parent[leaf] = value if parent.get(leaf) is None else pick(parent[leaf], value)


def _walk(doc: dict[str, Any], path: str) -> tuple[dict[str, Any], str]:
    *parents, leaf = path.split(".")
    for part in parents:
        doc = doc.setdefault(part, {})
    return doc, leaf


def _seconds(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds()


class StoredTicket(BaseModel):
    """What a ticket's fact document tells its cells beyond one event: the quoted call time
    (from `issued`) and the actual one (from `called` onward)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    eta: Instant | None = None
    called_at: Instant | None = None


def ticket_contributions(
    ticket: TicketFacts, key: CellKey, stored: StoredTicket
) -> list[Contribution]:
    """What one ticket event adds. Each figure comes from the event that owns it (the wait from
    `ticket.called`, which alone knows when the ticket joined the line), so a `completed` that
    arrives before its `called` adds the service time and leaves the wait to the `called`.
    `stored` is the ticket's document after this event's facts were written. The ETA error needs
    the quote (from `issued`) and the call time (from `called`): it belongs to those two events,
    and whichever of them is written second sees both (their writes are atomic and ordered)."""
    at_counter = CellKey(**{**key.fields(), "counter": getattr(ticket, "counter", ISSUE_TIME)})
    found: list[Contribution] = []
    if isinstance(ticket, TicketIssued):
        counts = {"issued": 1}
        if ticket.priority:
            counts[f"priority_{ticket.priority.value}"] = 1
        if ticket.rechecked_from:
            counts["rechecked"] = 1
        if ticket.transferred_from:
            counts["transferred_in"] = 1
        if ticket.appointment_at:
            counts["booked"] = 1
        found.append(Contribution("issued", key, counts))
    elif isinstance(ticket, TicketCalled):
        wait = _seconds(ticket.queued_at or ticket.issued_at, ticket.called_at)
        found.append(Contribution("called", at_counter, {"called": 1}, {WAIT: wait}))
    elif isinstance(ticket, TicketStarted):
        found.append(Contribution("started", at_counter, {"started": 1}))
    elif isinstance(ticket, TicketCompleted):
        service = _seconds(ticket.called_at, ticket.completed_at)
        counts = {"completed": 1, f"outcome_{ticket.outcome.value}": 1}
        found.append(Contribution("completed", at_counter, counts, {SERVICE: service}))
    elif isinstance(ticket, TicketNoShow):
        counts = {"no_show": 1, "recalls": ticket.recalls}
        found.append(Contribution("no_show", at_counter, counts))
    elif isinstance(ticket, TicketTransferred):
        found.append(Contribution("transferred", at_counter, {"transferred": 1}))
    elif isinstance(ticket, TicketCancelled):
        found.append(Contribution("cancelled", key, {"cancelled": 1}))
    owns_eta = isinstance(ticket, TicketIssued | TicketCalled)
    if owns_eta and stored.eta is not None and stored.called_at is not None:
        error = _seconds(stored.eta, stored.called_at)
        within = int(abs(error) <= ETA_WINDOW_SECONDS)
        found.append(
            Contribution("eta", key, {"eta_within": within}, {ETA: abs(error)},
                         {"eta_signed": sketch.milliseconds(error)})
        )  # fmt: skip
    return found


def request_contributions(
    request: RequestSubmitted | RequestCheckedIn, key: RequestCellKey
) -> list[Contribution]:
    if isinstance(request, RequestCheckedIn):
        return [Contribution("checked_in", key, {"checked_in": 1})]
    counts = {"submitted": 1}
    if request.priority:
        counts[f"priority_{request.priority.value}"] = 1
    if request.appointment_at:
        counts["booked"] = 1
    return [Contribution("submitted", key, counts)]


class NotificationFact(StrEnum):
    """The events of a delivery a batch may fold."""

    SENT = "sent"
    RECEIPT = "receipt"
    FAILED = "failed"


# Which events a delivery's cell contribution belongs to. One that needs facts of two events (the
# report's cell is its sent's hour; a failure is taken back by a later sent) belongs to both:
# whichever is written second reads both (as the ETA error of a ticket, ticket_contributions).
NOTIFICATION_OWNERS = {
    "sent": {NotificationFact.SENT},
    "receipt": {NotificationFact.SENT, NotificationFact.RECEIPT},
    "failed": {NotificationFact.FAILED},
    "failed_undone": {NotificationFact.SENT, NotificationFact.FAILED},
}


class StoredNotification(BaseModel):
    """What a delivery's fact document tells its cell once a batch's facts are in it: notify
    settles a delivery once, sent or failed, and records at most one delivery report of a sent
    one; a report may reach reporting before the `sent` it settles."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    site: str
    # Whose facts the cells' marks record: the delivery id (its site is the cell's). Absent from
    # the documents written before a delivery's document was its site's (ADR 0229): then the
    # document id, which was the delivery id.
    delivery_id: str | None = None
    channel: str
    sent_at: Instant | None = None
    cost_units: int = 0
    receipt: DeliveryOutcome | None = None
    failed_at: Instant | None = None
    refused: bool = False


def notification_contributions(
    notification: StoredNotification,
    timezone: str,
    folding: Collection[NotificationFact] = tuple(NotificationFact),
) -> list[Contribution]:
    """What a delivery adds to the notification cells in its CURRENT state, from its whole fact
    document (not from the events of one batch), so that every batch that touches it, in any
    order and however often, names the same facts, and each is counted once by its mark:
    `sent` (with its cost) and its `receipt` in the cell of the hour it was sent; `failed` in the
    cell of the hour it failed. A delivery that failed and was later sent counts as sent (as the
    day summary always did): then `failed_undone` takes its failure back in the same cell, net
    nothing whether or not `failed` had been counted before. A document holding only a receipt
    (the `sent` not folded yet) counts nothing until its `sent` arrives. Only the contributions
    that belong to the events being folded (`folding`) are made: a report's batch does not name
    the `sent` again, which would make its cell write match nothing and settle fact by fact."""
    found: list[Contribution] = []
    if notification.sent_at is not None:
        key = _notification_key(notification, notification.sent_at, timezone)
        sent = {"sent": 1, "cost_units": notification.cost_units}
        found.append(Contribution("sent", key, _nonzero(sent)))
        if notification.receipt is not None:
            found.append(Contribution("receipt", key, {notification.receipt.value: 1}))
    if notification.failed_at is not None:
        key = _notification_key(notification, notification.failed_at, timezone)
        failed = _nonzero({"failed": 1, "refused": int(notification.refused)})
        found.append(Contribution("failed", key, failed))
        if notification.sent_at is not None:
            undone = {name: -n for name, n in failed.items()}
            found.append(Contribution("failed_undone", key, undone))
    return [c for c in found if NOTIFICATION_OWNERS[c.name] & set(folding)]


def _notification_key(
    notification: StoredNotification, at: datetime, timezone: str
) -> NotificationCellKey:
    local = at.astimezone(ZoneInfo(timezone))
    day = local_day(at, timezone).isoformat()
    return NotificationCellKey(notification.site, day, notification.channel, f"{local:%H}")


def _nonzero(counts: Mapping[str, int]) -> dict[str, int]:
    """A cell keeps no zero counts (a cost-free channel adds no `cost_units` field)."""
    return {name: n for name, n in counts.items() if n}


@dataclass
class Tally:
    """Cells added up: counts, signed sums and sketches."""

    counts: dict[str, int] = field(default_factory=dict)
    sums_ms: dict[str, int] = field(default_factory=dict)
    sketches: dict[str, sketch.Sketch] = field(default_factory=dict)

    def add_cell(self, cell: Mapping[str, Any]) -> None:
        for name, value in (cell.get("n") or {}).items():
            self.counts[name] = self.counts.get(name, 0) + int(value)
        for name, value in (cell.get("sum_ms") or {}).items():
            self.sums_ms[name] = self.sums_ms.get(name, 0) + int(value)
        for name, doc in (cell.get("sketch") or {}).items():
            self.sketch(name).merge(sketch.Sketch.from_document(doc))

    def sketch(self, name: str) -> sketch.Sketch:
        return self.sketches.setdefault(name, sketch.Sketch())

    def count(self, name: str) -> int:
        return self.counts.get(name, 0)

    def prefixed(self, prefix: str) -> dict[str, int]:
        """Counts named `<prefix>_<x>` as {x: n}, e.g. outcomes or priority reasons."""
        return {k.removeprefix(prefix + "_"): v for k, v in sorted(self.counts.items())
                if k.startswith(prefix + "_") and v}  # fmt: skip


def tally(cells: Iterable[Mapping[str, Any]]) -> Tally:
    total = Tally()
    for cell in cells:
        total.add_cell(cell)
    return total
