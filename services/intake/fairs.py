"""Use cases of a rotating fair's plan: show a quarter, edit a date, publish the fair days to the
venues' sites (through the same Admin use cases, so the hub sends them down to the site boxes)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

from giliran.catalogue import Fair
from giliran.store import Document
from services.intake import fair_plan, sessions
from services.intake.admin import AddSession, Admin
from services.intake.errors import AdminInvalid
from services.intake.fair_plan import FairDay

# Withdrawn fair days are cancelled with this note (citizens already registered are told).
WITHDRAWN = "hari BOTRAM dipindah"


def _plan_key(fair: str) -> str:
    # Kept beside the sites' calendars; a site slug never holds a colon.
    return f"fair:{fair}"


@dataclass(frozen=True)
class Publication:
    opened: list[FairDay]
    withdrawn: list[tuple[date, str]]


@dataclass
class FairPlans:
    admin: Admin

    def fair(self, template: str) -> Fair:
        found = self.admin.intake.catalogue.fairs.get(template)
        if found is None:
            raise AdminInvalid(
                f"Kolom 'fair': '{template}' bukan pameran bergilir.",
                f"Field 'fair': '{template}' is not a rotating fair.",
                "fair",
            )
        return found

    def today(self, template: str) -> date:
        """The date at the fair's venues now (WIB): the UTC date lags it until 07:00."""
        return self._today(self.fair(template))

    def _today(self, fair: Fair) -> date:
        return self.admin.intake.clock().astimezone(ZoneInfo(fair.timezone)).date()

    async def _state(
        self, fair: Fair
    ) -> tuple[dict[date, str | None], dict[date, str], dict[date, str]]:
        doc = await self.admin.intake.store.calendar_of(_plan_key(fair.template))

        def dates(field: str) -> dict[date, Any]:
            return {date.fromisoformat(k): v for k, v in (doc.get(field) or {}).items()}

        return dates("edits"), dates("published"), dates("withdrawing")

    async def plan(self, template: str, quarter: str) -> tuple[list[FairDay], dict[date, str]]:
        """A quarter's fair days after edits, and which are published at which venue."""
        fair = self.fair(template)
        first, last = self._quarter(quarter)
        edits, published, _ = await self._state(fair)
        days = fair_plan.rotation(fair, first, last, self.admin.intake.holidays)
        return fair_plan.with_edits(days, edits, fair), published

    def _quarter(self, quarter: str) -> tuple[date, date]:
        try:
            return fair_plan.quarter_dates(quarter)
        except ValueError as exc:
            raise AdminInvalid(
                f"Kolom 'quarter': '{quarter[:10]}' bukan triwulan seperti 2027Q1.",
                f"Field 'quarter': '{quarter[:10]}' is not a quarter like 2027Q1.",
                "quarter",
            ) from exc

    async def edit(self, template: str, day: date, venue: str | None) -> None:
        """Move a fair day to another venue, drop it (None) or hold it on a skipped week."""
        fair = self.fair(template)
        try:
            fair_plan.check_edit(fair, day, venue)
        except ValueError as exc:
            raise AdminInvalid(f"Kolom 'venue': {exc}.", f"Field 'venue': {exc}.", "venue") from exc
        if day < self._today(fair):
            raise AdminInvalid(
                f"Kolom 'date': tanggal {day} sudah lewat.",
                f"Field 'date': {day} is in the past.",
                "date",
            )

        def change(doc: Document) -> Document:
            edits = dict(doc.get("edits") or {})
            edits[day.isoformat()] = venue
            return {**doc, "edits": edits}

        await self.admin.intake.store.change_calendar(_plan_key(fair.template), change)

    async def publish(self, template: str, quarter: str) -> Publication:
        """Open every fair day of the quarter at its venue's site and withdraw those moved or
        dropped since the last publication. Safe to repeat, after a crash too: each step is
        idempotent; an opening is recorded after it is done, a withdrawal before it starts (as
        `withdrawing`) and again after, so a publication that died between the two finishes
        it, or opens the date again if the plan has it back at that venue."""
        fair = self.fair(template)
        plan, published = await self.plan(template, quarter)
        _, _, withdrawing = await self._state(fair)
        to_open, to_withdraw = fair_plan.publish_steps(
            plan, published, self._today(fair), withdrawing
        )
        for day, slug in to_withdraw:
            site = fair.site_of(slug)
            await self._record(fair, day, None, withdrawing=slug)
            await self.admin.cancel_session(site, sessions.session_id_for(site, day), WITHDRAWN)
            await self._record(fair, day, None)
        for entry in to_open:
            assert entry.venue is not None
            site = fair.site_of(entry.venue.slug)
            if entry.planned is None:  # held on a week the policy skips: an admin chose so
                await self.admin.set_closed(site, entry.day, False)
            await self.admin.add_session(site, AddSession(date=entry.day))
            await self._record(fair, entry.day, entry.venue.slug)
        return Publication(to_open, to_withdraw)

    async def _record(
        self, fair: Fair, day: date, venue: str | None, *, withdrawing: str | None = None
    ) -> None:
        """`venue` is published on `day` (None: nothing is); `withdrawing`: the venue whose
        session is about to be cancelled, kept until the next record of that day."""

        def change(doc: Document) -> Document:
            key = day.isoformat()
            published = dict(doc.get("published") or {})
            begun = dict(doc.get("withdrawing") or {})
            if venue is None:
                published.pop(key, None)
            else:
                published[key] = venue
            if withdrawing is None:
                begun.pop(key, None)
            else:
                begun[key] = withdrawing
            return {**doc, "published": published, "withdrawing": begun}

        await self.admin.intake.store.change_calendar(_plan_key(fair.template), change)
