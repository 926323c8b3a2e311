"""A site's holiday policy with no I/O: which dates it closes (Idul Fitri, Idul Adha and the cuti
bersama around them by default) and the reason told to citizens and admins."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import date, timedelta

from giliran.catalogue import HolidayClosure, ScheduleRule

NOTHING_ADDED: Mapping[date, str] = {}


def holiday_name(
    holidays: Collection[date],
    day: date,
    added: Mapping[date, str] = NOTHING_ADDED,
    removed: Collection[date] = (),
) -> str | None:
    """The holiday's Indonesian name (the `holidays` package fills years in on demand), as the
    site's admin corrected the calendar: a date added with its name (the year's cuti bersama,
    decreed after the package's release), a date removed (an estimated date the government
    moved)."""
    names = [] if day in removed else [_name_in(holidays, day)]
    if day in added:  # beside the package's name, never instead of it
        names.append(added[day] or "Hari libur")
    return "; ".join(n for n in names if n) or None


def _name_in(holidays: Collection[date], day: date) -> str | None:
    get = getattr(holidays, "get", None)
    if get is not None:
        name = get(day)
        return str(name) if name else None
    return "Hari libur" if day in holidays else None


def _matches(
    closure: HolidayClosure,
    holidays: Collection[date],
    day: date,
    added: Mapping[date, str],
    removed: Collection[date],
) -> bool:
    name = holiday_name(holidays, day, added, removed)
    return name is not None and closure.match.casefold() in name.casefold()


def closure_of(
    rule: ScheduleRule,
    day: date,
    holidays: Collection[date],
    added: Mapping[date, str] = NOTHING_ADDED,
    removed: Collection[date] = (),
) -> HolidayClosure | None:
    """The policy that closes `day`: the day is such a holiday, or lies between two of them with
    at most `span_gap_days` days in between (Lebaran's Saturday and Sunday between the cuti
    bersama), so the break is closed whole and never opens for one odd day in its middle.
    `added` and `removed` are the site admin's corrections of the calendar (`holiday_name`)."""

    def matches(closure: HolidayClosure, when: date) -> bool:
        return _matches(closure, holidays, when, added, removed)

    for closure in rule.closed_holidays:
        if matches(closure, day):
            return closure
        gap = closure.span_gap_days
        before = [d for d in range(1, gap + 1) if matches(closure, day - timedelta(d))]
        if not before:
            continue
        after = [d for d in range(1, gap + 1) if matches(closure, day + timedelta(d))]
        if after and min(before) + min(after) - 1 <= gap:
            return closure
    return None
