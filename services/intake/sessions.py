"""Session rules with no I/O: which dates open (MSC rule, holidays, admin overrides), windows in
UTC, the sessions ahead, booking windows and appointment slots."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from giliran.catalogue import AdmissionRule, HolidayClosure, SiteDef
from giliran.contracts.subjects import session_of_site
from services.intake.closures import closure_of, holiday_name
from services.intake.errors import InvalidSlot, SessionClosed, SessionNotBookable

DAYS_ID = ("Senin", "Selasa", "Rabu", "Kamis", "Jumat", "Sabtu", "Minggu")
MONTHS_ID = [
    "Januari",
    "Februari",
    "Maret",
    "April",
    "Mei",
    "Juni",
    "Juli",
    "Agustus",
    "September",
    "Oktober",
    "November",
    "Desember",
]


@dataclass(frozen=True)
class CalendarOverrides:
    """What a site's admin changed on top of the catalogue rule (kept in intake's store)."""

    holidays_added: Mapping[date, str] = field(default_factory=dict)
    holidays_removed: frozenset[date] = frozenset()
    closed: Mapping[date, str] = field(default_factory=dict)
    sessions_added: Mapping[date, tuple[time, time]] = field(default_factory=dict)
    cancelled: Mapping[str, str] = field(default_factory=dict)
    # Dates an admin opened although the holiday policy closes them (docs/decisions/0135).
    closures_lifted: frozenset[date] = frozenset()


NO_OVERRIDES = CalendarOverrides()


@dataclass(frozen=True)
class SessionWindow:
    """One service session at a site: when it opens and closes (UTC inside)."""

    session_id: str
    site: str
    local_date: date
    opens_at: datetime
    closes_at: datetime
    kind: str = "scheduled"
    # Why the date opens: a holiday's name, "Minggu", or an admin's label.
    label: str = ""
    cancelled: bool = False

    def accepts_registration(self, now: datetime) -> bool:
        """Registration runs from the day's start until the session closes."""
        return now < self.closes_at and not self.cancelled


def is_closed(site: SiteDef, day: date, overrides: CalendarOverrides) -> bool:
    return day in site.schedule.closed_dates or day in overrides.closed


def local_today(site: SiteDef, now: datetime) -> date:
    return now.astimezone(ZoneInfo(site.timezone)).date()


def slot_key(start: datetime, zone: str) -> str:
    """A slot's name: its local start as HHMM."""
    return f"{start.astimezone(ZoneInfo(zone)):%H%M}"


def session_id_for(site: str, day: date) -> str:
    return f"{site}-{day:%Y%m%d}"


def of_site(site: str, session_id: str) -> bool:
    """Whether `session_id` names one of `site`'s sessions (the shape both services check)."""
    return session_of_site(site, session_id)


def policy_closure(
    site: SiteDef,
    day: date,
    holidays: Collection[date],
    overrides: CalendarOverrides = NO_OVERRIDES,
) -> HolidayClosure | None:
    """The holiday policy's closure of `day` on the calendar as the site's admin corrected it
    (a cuti bersama added by name closes like one the `holidays` package knows)."""
    return closure_of(
        site.schedule, day, holidays, overrides.holidays_added, overrides.holidays_removed
    )


def scheduled_session(
    site: SiteDef,
    day: date,
    holidays: Collection[date],
    overrides: CalendarOverrides = NO_OVERRIDES,
) -> SessionWindow | None:
    """The session a site's rule gives on a local date, if any (MSC: Sundays and holidays); a
    date the office marked closed never opens, whatever else says it should."""
    rule = site.schedule
    if is_closed(site, day, overrides):
        return None
    if day not in overrides.closures_lifted and policy_closure(site, day, holidays, overrides):
        return None
    label = ""
    if rule.rule == "sundays_and_holidays":
        holiday = day in holidays and day not in overrides.holidays_removed
        if holiday:
            label = str(getattr(holidays, "get", lambda _d: "")(day) or "Hari libur")
        elif day in overrides.holidays_added:
            label = overrides.holidays_added[day] or "Hari libur"
        elif day.weekday() == 6:
            label = "Minggu"
        elif day in rule.extra_dates:
            label = "Sesi tambahan"
    elif day in rule.extra_dates:
        label = "Sesi tambahan"
    opens, closes = rule.opens, rule.closes
    if day in overrides.sessions_added:
        opens, closes = overrides.sessions_added[day]
        label = label or "Sesi tambahan"
    if not label:
        return None
    zone = ZoneInfo(site.timezone)
    sid = session_id_for(site.site, day)
    return SessionWindow(
        sid,
        site.site,
        day,
        datetime.combine(day, opens, zone).astimezone(UTC),
        datetime.combine(day, closes, zone).astimezone(UTC),
        label=label,
        cancelled=sid in overrides.cancelled,
    )


def upcoming_sessions(
    site: SiteDef,
    now: datetime,
    holidays: Collection[date],
    overrides: CalendarOverrides = NO_OVERRIDES,
    *,
    days: int = 30,
    include_cancelled: bool = False,
) -> list[SessionWindow]:
    """Sessions that have not closed yet, from today for `days` local days."""
    today = now.astimezone(ZoneInfo(site.timezone)).date()
    found = []
    for offset in range(days + 1):
        window = scheduled_session(site, today + timedelta(days=offset), holidays, overrides)
        if window is None or window.closes_at <= now:
            continue
        if window.cancelled and not include_cancelled:
            continue
        found.append(window)
    return found


def demo_session(site: SiteDef, now: datetime, hours: int = 12) -> SessionWindow:
    """`giliran up --demo`: an ad-hoc session open from now, so the flow can be tried any hour."""
    day = now.astimezone(ZoneInfo(site.timezone)).date()
    return SessionWindow(
        f"{site.site}-demo-{day:%Y%m%d}", site.site, day, now, now + timedelta(hours=hours), "adhoc"
    )


def format_local(moment: datetime, zone: str, language: str = "id") -> str:
    """`Minggu, 29 November 2026 pukul 09.00 WIB` / `Sunday 29 November 2026, 09:00 WIB`."""
    local = moment.astimezone(ZoneInfo(zone))
    if language == "en":
        return f"{local:%A %d %B %Y}, {local:%H:%M} WIB"
    day_name, month = DAYS_ID[local.weekday()], MONTHS_ID[local.month - 1]
    return f"{day_name}, {local.day} {month} {local.year} pukul {local:%H.%M} WIB"


def session_for_registration(
    site: SiteDef,
    now: datetime,
    holidays: Collection[date],
    adhoc: list[SessionWindow],
    overrides: CalendarOverrides = NO_OVERRIDES,
) -> SessionWindow:
    """Which session a walk-in made now joins: an open ad-hoc one, else today's scheduled one."""
    today = now.astimezone(ZoneInfo(site.timezone)).date()
    if not is_closed(site, today, overrides):
        for window in adhoc:
            if (
                window.site == site.site
                and window.opens_at <= now < window.closes_at
                and window.session_id not in overrides.cancelled
            ):
                return window
    scheduled = scheduled_session(site, today, holidays, overrides)
    if scheduled is None or not scheduled.accepts_registration(now):
        ahead = upcoming_sessions(site, now, holidays, overrides, days=60)
        nxt = next((w for w in ahead if w.local_date > today), None)
        raise SessionClosed(
            site.site,
            site.schedule.rule == "sundays_and_holidays",
            format_local(nxt.opens_at, site.timezone) if nxt else "",
            format_local(nxt.opens_at, site.timezone, "en") if nxt else "",
        )
    return scheduled


def session_for_booking(
    site: SiteDef,
    session_id: str,
    now: datetime,
    holidays: Collection[date],
    overrides: CalendarOverrides = NO_OVERRIDES,
) -> SessionWindow:
    """A scheduled session a citizen books ahead: it exists, is not cancelled, has not closed,
    and falls within the site's pre-registration window (days_ahead local days from today)."""
    prefix = f"{site.site}-"
    try:
        day = datetime.strptime(session_id.removeprefix(prefix), "%Y%m%d").date()
    except ValueError:
        day = None
    if day is None or not session_id.startswith(prefix):
        raise SessionNotBookable(session_id, "sesi tidak dikenal.", "unknown session.")
    window = scheduled_session(site, day, holidays, overrides)
    if window is None:
        raise SessionNotBookable(
            session_id, "tidak ada sesi pada tanggal itu.", "no session on that date."
        )
    if window.cancelled:
        raise SessionNotBookable(session_id, "sesi dibatalkan.", "the session was cancelled.")
    if now >= window.closes_at:
        raise SessionNotBookable(session_id, "sesi sudah selesai.", "the session is over.")
    today = now.astimezone(ZoneInfo(site.timezone)).date()
    ahead = site.booking.days_ahead
    if day > today + timedelta(days=ahead):
        raise SessionNotBookable(
            session_id,
            f"pendaftaran daring dibuka {ahead} hari sebelum sesi.",
            f"online registration opens {ahead} days before the session.",
        )
    return window


def slots(window: SessionWindow, minutes: int) -> list[datetime]:
    """Appointment slot starts: every `minutes` from opening, the last one starting before close."""
    step = timedelta(minutes=minutes)
    starts, at = [], window.opens_at
    while at < window.closes_at:
        starts.append(at)
        at += step
    return starts


def check_slot(window: SessionWindow, minutes: int, at: datetime, now: datetime, zone: str) -> str:
    """The slot's key (local HHMM) when `at` starts one that has not ended; else InvalidSlot."""
    step = timedelta(minutes=minutes)
    open_slots = [s for s in slots(window, minutes) if s + step > now]
    if at.astimezone(UTC) not in open_slots:
        listed = ", ".join(f"{s.astimezone(ZoneInfo(zone)):%H.%M}" for s in open_slots) or "-"
        raise InvalidSlot(listed)
    return slot_key(at, zone)


# --- admission: when online registration runs, when an unchecked registration lapses --------


def registration_window(
    window: SessionWindow, rule: AdmissionRule, zone: str
) -> tuple[datetime, datetime]:
    """When online registration for a session opens and closes (UTC): `opens_days_before` days
    before its date at `opens_at` local time, until `closes_minutes_before_end` before it ends.
    An ad-hoc (demo) session has no window: it is open from its start."""
    if window.kind == "adhoc":
        return window.opens_at, window.closes_at
    day = window.local_date - timedelta(days=rule.opens_days_before)
    opens = datetime.combine(day, rule.opens_at, ZoneInfo(zone)).astimezone(UTC)
    closes = window.closes_at - timedelta(minutes=rule.closes_minutes_before_end)
    return opens, max(closes, opens)


def lapse_at(
    window: SessionWindow,
    grace_minutes: int,
    submitted_at: datetime,
    appointment_at: datetime | None = None,
) -> datetime:
    """When a registration not yet checked in lapses: `grace_minutes` after the session opens,
    after it was made, or after its appointment slot, whichever is latest."""
    base = max(window.opens_at, submitted_at, appointment_at or window.opens_at)
    return base + timedelta(minutes=grace_minutes)


@dataclass(frozen=True)
class ClosedDay:
    """A date the site would have opened on but does not, and why (told to citizens)."""

    local_date: date
    reason_id: str
    reason_en: str
    # "policy" (the catalogue's holiday policy, an admin may open it), "office" (an admin or
    # the catalogue marked it closed).
    source: str


def closed_days(
    site: SiteDef,
    now: datetime,
    holidays: Collection[date],
    overrides: CalendarOverrides = NO_OVERRIDES,
    *,
    days: int = 60,
) -> list[ClosedDay]:
    """Dates within `days` that the rule or an admin would open but that stay closed, with the
    reason: the public session list and the admin page show them so nobody comes in vain."""
    today = local_today(site, now)
    horizon = [today + timedelta(days=offset) for offset in range(days + 1)]
    # The same site and calendar with nothing closed: what would have opened.
    open_site = site.model_copy(
        update={"schedule": site.schedule.model_copy(update={"closed_dates": []})}
    )
    unclosed = CalendarOverrides(
        holidays_added=overrides.holidays_added,
        holidays_removed=overrides.holidays_removed,
        sessions_added=overrides.sessions_added,
        closures_lifted=frozenset(horizon),
    )
    found = []
    for day in horizon:
        if scheduled_session(site, day, holidays, overrides) is not None:
            continue
        if scheduled_session(open_site, day, holidays, unclosed) is None:
            continue
        if is_closed(site, day, overrides):
            note = overrides.closed.get(day) or "tutup"
            found.append(
                ClosedDay(day, f"Kantor tutup: {note}", f"Office closed: {note}", "office")
            )
            continue
        closure = policy_closure(site, day, holidays, overrides)
        if closure is None:
            continue
        name = holiday_name(holidays, day, overrides.holidays_added, overrides.holidays_removed)
        reason_id = f"{name}. {closure.reason.id}" if name else closure.reason.id
        found.append(ClosedDay(day, reason_id, closure.reason.en, "policy"))
    return found
