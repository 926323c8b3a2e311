"""An in-memory stand-in for reporting's store (services.reporting.store.Facts), for
service-layer tests that run the use cases in milliseconds without a store or a bus."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import date
from typing import Any

from services.reporting.cells import Contribution, StoredNotification, StoredTicket, apply
from services.reporting.fold import CounterChange, FactChange
from services.reporting.store import Facts, mark

Doc = dict[str, Any]


class InMemoryFacts:
    """The FactStore's operations over dicts: `$set` upserts are dict updates, folded event ids
    are kept per document, and a contribution is added to its cell once per owner and name, as
    FactStore.add_*_cells does."""

    def __init__(self) -> None:
        self.requests: dict[str, Doc] = {}
        self.tickets: dict[str, Doc] = {}
        self.feedback: dict[str, Doc] = {}
        self.notifications: dict[str, Doc] = {}
        self.ticket_cells: dict[str, Doc] = {}
        self.request_cells: dict[str, Doc] = {}
        self.notification_cells: dict[str, Doc] = {}
        self.counters: dict[str, Doc] = {}

    async def checked_in(self, request_ids: Iterable[str]) -> dict[str, str]:
        found = {r: self.requests.get(r, {}).get("checked_in_at") for r in request_ids}
        return {r: str(at) for r, at in found.items() if at}

    async def mark_checked_in(self, check_ins: Mapping[str, str]) -> None:
        for t in self.tickets.values():
            if t.get("request_id") in check_ins:
                t["checked_in_at"] = check_ins[t["request_id"]]

    @staticmethod
    def _fold(docs: dict[str, Doc], changes: Mapping[str, FactChange]) -> dict[str, set[str]]:
        before = {key: set(docs.get(key, {}).get("folded", {})) for key in changes}
        for key, change in changes.items():
            doc = docs.setdefault(key, {})
            doc.update(change.fields)
            doc.setdefault("folded", {}).update(dict.fromkeys(change.events, 1))
        return before

    async def save_requests(self, changes: Mapping[str, FactChange]) -> dict[str, set[str]]:
        return self._fold(self.requests, changes)

    async def save_tickets(
        self, changes: Mapping[str, FactChange], eta_owners: Collection[str] = ()
    ) -> tuple[dict[str, set[str]], dict[str, StoredTicket]]:
        before = self._fold(self.tickets, changes)
        return before, {k: StoredTicket.model_validate(self.tickets[k]) for k in changes}

    async def save_feedback(self, changes: Mapping[str, FactChange]) -> None:
        for key, change in changes.items():
            self.feedback.setdefault(key, {}).update(change.fields)

    async def save_notifications(
        self, changes: Mapping[str, FactChange]
    ) -> dict[str, StoredNotification]:
        stored = {}
        for key, change in changes.items():
            doc = self.notifications.setdefault(key, {})  # one per site and delivery
            doc.update(change.fields)
            stored[key] = StoredNotification.model_validate(doc)
        return stored

    async def save_counters(self, changes: Iterable[CounterChange]) -> None:
        for change in changes:
            if self.counters.get(change.key, {}).get("order", -1) < change.order:
                self.counters[change.key] = {**change.fields, "order": change.order}

    async def add_ticket_cells(self, contributions: Sequence[tuple[str, Contribution]]) -> None:
        for owner, c in contributions:
            self._contribute(self.ticket_cells, owner, c)

    async def add_request_cells(self, contributions: Sequence[tuple[str, Contribution]]) -> None:
        for owner, c in contributions:
            self._contribute(self.request_cells, owner, c)

    async def add_notification_cells(
        self, contributions: Sequence[tuple[str, Contribution]]
    ) -> None:
        for owner, c in contributions:
            self._contribute(self.notification_cells, owner, c)

    @staticmethod
    def _contribute(cells: dict[str, Doc], owner: str, c: Contribution) -> None:
        cell = cells.setdefault(c.cell.id, {**c.cell.fields(), "seen": {}})
        seen = mark(owner, c.name).removeprefix("seen.")
        if seen not in cell["seen"]:
            cell["seen"][seen] = 1
            apply(cell, c)

    @staticmethod
    def _where(
        cells: dict[str, Doc], first: date, last: date, site: str | None, session_id: str | None
    ) -> list[Doc]:
        return [
            c
            for c in cells.values()
            if str(first) <= c["day"] <= str(last)
            and site in (None, c["site"])
            and session_id in (None, c.get("session_id"))
        ]

    async def ticket_cells_where(
        self, first: date, last: date, site: str | None = None, session_id: str | None = None
    ) -> list[Doc]:
        return self._where(self.ticket_cells, first, last, site, session_id)

    async def request_cells_where(
        self, first: date, last: date, site: str | None = None, session_id: str | None = None
    ) -> list[Doc]:
        return self._where(self.request_cells, first, last, site, session_id)

    @staticmethod
    def _on(docs: dict[str, Doc], site: str, first: date, last: date) -> list[Doc]:
        return [
            d
            for d in docs.values()
            if d.get("site") == site and str(first) <= str(d.get("day")) <= str(last)
        ]

    async def tickets_on(self, site: str, day: date) -> list[Doc]:
        return self._on(self.tickets, site, day, day)

    async def feedback_between(self, site: str, first: date, last: date) -> list[Doc]:
        return self._on(self.feedback, site, first, last)

    async def completed_between(self, site: str, first: date, last: date) -> int:
        return sum(1 for t in self._on(self.tickets, site, first, last) if "completed_at" in t)

    async def notification_cells_where(
        self, first: date, last: date, site: str | None = None
    ) -> list[Doc]:
        return self._where(self.notification_cells, first, last, site, None)

    async def counters_on(self, site: str, day: date) -> list[Doc]:
        return self._on(self.counters, site, day, day)


def _conforms(fake: InMemoryFacts) -> Facts:
    return fake  # mypy checks here that the fake has every operation of the Protocol
