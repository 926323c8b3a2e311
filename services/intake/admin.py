"""Intake use cases for a site's admin: sessions, holiday and closed dates, quotas, cancellation."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, time
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, model_validator

from giliran.contracts import RequestCancelled, new_event, new_id
from giliran.contracts.events import ServiceCode
from giliran.store import Document, instant
from services.intake import sessions
from services.intake.errors import AdminInvalid
from services.intake.handlers import SOURCE, Intake
from services.intake.store import SESSION_FACTS_SECONDS

log = logging.getLogger("giliran.intake")

# notify's session-cancelled template answers exactly this reason (services/notify/handlers.py).
SESSION_CANCELLED = "session_cancelled"
# The second sweeps of cancelled sessions still to run (held so they are not collected).
_SWEEPS: set[asyncio.Task[None]] = set()


class AddSession(BaseModel):
    """Open a session on a date (a BOTRAM fair day, an extra MSC day), optionally with its own
    hours in the site's local time."""

    model_config = ConfigDict(extra="forbid")

    date: date
    opens: time | None = None
    closes: time | None = None

    @model_validator(mode="after")
    def _hours(self) -> AddSession:
        if (self.opens is None) != (self.closes is None):
            raise ValueError("give both opens and closes, or neither")
        if self.opens is not None and self.closes is not None and self.opens >= self.closes:
            raise ValueError("opens must be before closes")
        return self


class DateNote(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str = Field(default="", max_length=100)


class QuotaChange(BaseModel):
    """Places per service for one session; null removes the limit."""

    model_config = ConfigDict(extra="forbid")

    quotas: dict[ServiceCode, int | None] = Field(min_length=1, max_length=50)


CalendarAction = Literal[
    "add_session", "cancel_session", "holiday_add", "holiday_remove", "close", "reopen"
]


class CalendarChange(BaseModel):
    """One calendar change an admin made, as the kabupaten hub sends it down to a site box
    (services/intake/edge.py); applying it again changes nothing."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(default_factory=new_id, max_length=40)
    site: str = Field(max_length=63)
    action: CalendarAction
    day: date | None = None
    session_id: str | None = Field(default=None, max_length=80)
    opens: time | None = None
    closes: time | None = None
    note: str = Field(default="", max_length=100)


Announce = Callable[[CalendarChange], Awaitable[None]]


@dataclass
class Admin:
    intake: Intake
    # At the kabupaten hub: sends each change down to the site's box (None elsewhere).
    announce: Announce | None = None

    async def _announce(self, change: CalendarChange) -> None:
        if self.announce is not None:
            await self.announce(change)

    def _not_past(self, site: str, day: date) -> None:
        zone = self.intake.site(site).timezone
        if day < self.intake.clock().astimezone(ZoneInfo(zone)).date():
            raise AdminInvalid(
                f"Kolom 'date': tanggal {day} sudah lewat. Pilih hari ini atau sesudahnya.",
                f"Field 'date': {day} is in the past. Choose today or a later date.",
                "date",
            )

    async def add_session(self, site: str, change: AddSession) -> sessions.SessionWindow:
        spec = self.intake.site(site)
        self._not_past(site, change.date)
        overrides = await self.intake.overrides(site)
        if sessions.is_closed(spec, change.date, overrides):
            raise AdminInvalid(
                f"Kolom 'date': {change.date} ditandai tutup. Hapus dulu tanda tutupnya.",
                f"Field 'date': {change.date} is marked closed. Remove the closed mark first.",
                "date",
            )
        closure = sessions.policy_closure(spec, change.date, self.intake.holidays, overrides)
        if closure is not None and change.date not in overrides.closures_lifted:
            raise AdminInvalid(
                f"Kolom 'date': {change.date} tutup menurut kebijakan libur ({closure.reason.id}). "
                "Buka dulu tanggalnya.",
                f"Field 'date': {change.date} is closed by the holiday policy "
                f"({closure.reason.en}). Open the date first.",
                "date",
            )
        opens = change.opens or spec.schedule.opens
        closes = change.closes or spec.schedule.closes
        key = change.date.isoformat()

        def add(doc: Document) -> Document:
            added = dict(doc.get("sessions_added") or {})
            added[key] = {"opens": opens.isoformat(), "closes": closes.isoformat()}
            cancelled = dict(doc.get("cancelled") or {})
            cancelled.pop(sessions.session_id_for(site, change.date), None)
            return {**doc, "sessions_added": added, "cancelled": cancelled}

        await self.intake.store.change_calendar(site, add)
        await self._announce(
            CalendarChange(
                site=site, action="add_session", day=change.date, opens=opens, closes=closes
            )
        )
        window = sessions.scheduled_session(
            spec, change.date, self.intake.holidays, await self.intake.overrides(site)
        )
        assert window is not None
        return window

    async def cancel_session(self, site: str, session_id: str, note: str = "") -> int:
        """Cancel a session; every registrant gets `request.cancelled` (notify tells them).
        Returns how many requests were cancelled by this call (a retry cancels the rest)."""
        self.intake.site(site)
        _own_session(site, session_id)

        def cancel(doc: Document) -> Document:
            cancelled = dict(doc.get("cancelled") or {})
            cancelled[session_id] = note or "dibatalkan"
            return {**doc, "cancelled": cancelled}

        await self.intake.store.change_calendar(site, cancel)
        await self._announce(
            CalendarChange(site=site, action="cancel_session", session_id=session_id, note=note)
        )
        return await self._cancel_registrations(site, session_id)

    async def _cancel_registrations(self, site: str, session_id: str, *, again: bool = True) -> int:
        """Cancel every active registration of a session that no longer runs; with `again`,
        once more a moment later (`_sweep_later`)."""
        done = 0
        for doc in await self.intake.store.active_in_session(session_id):
            now = self.intake.clock()
            event = new_event(
                RequestCancelled(request_id=doc["_id"], reason=SESSION_CANCELLED, cancelled_at=now),
                site=site,
                source=SOURCE,
                at=now,
            )
            # Guarded on cancelled_at: one event per registrant however often this runs.
            if await self.intake.store.update_if(
                {"_id": doc["_id"], "cancelled_at": None},
                {"cancelled_at": instant(now), "cancel_reason": SESSION_CANCELLED},
                [event],
            ):
                done += 1
        self.intake.wake()
        if again:
            self._sweep_later(site, session_id)
        return done

    def _sweep_later(self, site: str, session_id: str) -> None:
        """Another intake instance may admit a registration to this session for up to
        SESSION_FACTS_SECONDS more, from its cached calendar (ADR 0176); so may a registration
        that read the calendar just before the change, on any instance. Sweep once more after
        that, so none stays active in a session that does not run. (A crash before then skips
        this second sweep; the admin's retry, or a new change of that day, sweeps again.)"""

        async def later() -> None:
            await asyncio.sleep(SESSION_FACTS_SECONDS + 1.0)
            try:
                await self._cancel_registrations(site, session_id, again=False)
            except Exception as exc:  # the service is stopping, or the store is away
                log.warning("second sweep of cancelled session %s failed: %s", session_id, exc)

        task = asyncio.create_task(later(), name=f"sweep-{session_id}")
        _SWEEPS.add(task)
        task.add_done_callback(_SWEEPS.discard)

    async def set_holiday(self, site: str, day: date, present: bool, note: str = "") -> None:
        """Add a date as a holiday (the MSC rule opens it) or remove one (the rule skips it,
        e.g. a holiday the government moved after the `holidays` release)."""
        self.intake.site(site)
        key = day.isoformat()

        def change(doc: Document) -> Document:
            added = dict(doc.get("holidays_added") or {})
            removed = set(doc.get("holidays_removed") or [])
            if present:
                added[key] = note or "Hari libur"
                removed.discard(key)
            else:
                added.pop(key, None)
                if day in self.intake.holidays:
                    removed.add(key)
            return {**doc, "holidays_added": added, "holidays_removed": sorted(removed)}

        await self.intake.store.change_calendar(site, change)
        action: CalendarAction = "holiday_add" if present else "holiday_remove"
        await self._announce(CalendarChange(site=site, action=action, day=day, note=note))
        if not present:
            await self._cancel_registrations(site, sessions.session_id_for(site, day))

    async def set_closed(self, site: str, day: date, closed: bool, note: str = "") -> int:
        """Mark a date closed (nothing opens on it; its registrants are told) or open it again;
        opening a date the holiday policy closes lifts the policy for that date alone."""
        spec = self.intake.site(site)
        key = day.isoformat()
        overrides = await self.intake.overrides(site)
        by_policy = sessions.policy_closure(spec, day, self.intake.holidays, overrides) is not None

        def change(doc: Document) -> Document:
            marks = dict(doc.get("closed") or {})
            lifted = set(doc.get("closures_lifted") or [])
            if closed:
                marks[key] = note or "tutup"
                lifted.discard(key)
            else:
                marks.pop(key, None)
                if by_policy:
                    lifted.add(key)
            return {**doc, "closed": marks, "closures_lifted": sorted(lifted)}

        await self.intake.store.change_calendar(site, change)
        action: CalendarAction = "close" if closed else "reopen"
        await self._announce(CalendarChange(site=site, action=action, day=day, note=note))
        if not closed:
            return 0
        cancelled = await self._cancel_registrations(site, sessions.session_id_for(site, day))
        for window in await self.intake._adhoc_sessions(site, self.intake.clock()):
            if window.local_date == day:
                cancelled += await self._cancel_registrations(site, window.session_id)
        return cancelled

    async def set_quotas(self, site: str, session_id: str, change: QuotaChange) -> list[Document]:
        spec = self.intake.site(site)
        _own_session(site, session_id)
        unknown = [code for code in change.quotas if spec.service(code) is None]
        if unknown:
            raise AdminInvalid(
                f"Kolom 'quotas': layanan {', '.join(unknown)} tidak ada di lokasi ini.",
                f"Field 'quotas': service(s) {', '.join(unknown)} not offered at this site.",
                "quotas",
            )
        for code, limit in change.quotas.items():
            if limit is not None and limit < 0:
                raise AdminInvalid(
                    f"Kolom 'quotas.{code}': kuota tidak boleh negatif.",
                    f"Field 'quotas.{code}': a quota cannot be negative.",
                    f"quotas.{code}",
                )
            await self.intake.store.set_limit(session_id, code, limit)
        return await self.quotas(site, session_id)

    async def quotas(self, site: str, session_id: str) -> list[Document]:
        """Each service's limit, places used and left (catalogue defaults until first use), with
        how the default was sized (`480 ÷ 10 menit`) and the places the session's
        counter-minutes still allow."""
        spec = self.intake.site(site)
        _own_session(site, session_id)
        stored = {d["what"]: d for d in await self.intake.store.quotas_of(session_id)}
        window = await self.intake.window_of(spec, session_id)
        sandbox = window is not None and window.kind == "adhoc"
        left = await self.intake.places_left(spec, window) if window else {}
        rows = []
        for service in spec.services:
            doc = stored.get(service.code)
            default = None if sandbox else spec.quota_of(service)
            limit = doc["limit"] if doc else default
            used = int(doc["used"]) if doc else 0
            rows.append(
                {
                    "service": service.code,
                    "limit": limit,
                    "used": used,
                    "remaining": None if limit is None else max(limit - used, 0),
                    "default": default,
                    "sized": "demo: tanpa batas" if sandbox else spec.quota_reason(service),
                    "minutes": service.minutes,
                    "places_left": left.get(service.code),
                }
            )
        return rows


def _own_session(site: str, session_id: str) -> None:
    """A session named in a path or form must be one of the site's: an admin acting at one
    site never reads or changes another site's session through it."""
    if not sessions.of_site(site, session_id):
        raise AdminInvalid(
            f"Kolom 'session_id': sesi '{session_id}' bukan milik lokasi '{site}'.",
            f"Field 'session_id': session '{session_id}' does not belong to site '{site}'.",
            "session_id",
        )
