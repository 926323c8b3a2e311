"""A rotating fair's quarter plan with no I/O: which venue hosts which fair day, generated from the
rotation order and the holiday policy, then an admin's edits on top (docs/decisions/0136)."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import date, timedelta

from giliran.catalogue import Fair, Text, Venue
from services.intake.closures import closure_of, holiday_name

QUARTER = re.compile(r"^(?P<year>20[0-9]{2})Q(?P<q>[1-4])$")


@dataclass(frozen=True)
class FairDay:
    """One week's fair day: where the rotation puts it, where it is after edits, and why not."""

    day: date
    # Where the rotation puts the fair (None: the holiday policy skips this week).
    planned: Venue | None
    # Where it is held after an admin's edit (None: no fair that week).
    venue: Venue | None
    # Why the rotation skips it, or the holiday it falls on.
    note: Text | None
    edited: bool = False


def quarter_dates(quarter: str) -> tuple[date, date]:
    """`2027Q1` → 1 January to 31 March 2027 (ValueError for anything else)."""
    found = QUARTER.match(quarter)
    if found is None:
        raise ValueError(f"quarter {quarter!r} is not like 2027Q1")
    year, q = int(found["year"]), int(found["q"])
    first = date(year, 3 * q - 2, 1)
    after = date(year + 1, 1, 1) if q == 4 else date(year, 3 * q + 1, 1)
    return first, after - timedelta(days=1)


def quarter_of(day: date) -> str:
    return f"{day.year}Q{(day.month - 1) // 3 + 1}"


def rotation(fair: Fair, first: date, last: date, holidays: Collection[date]) -> list[FairDay]:
    """The fair days from `first` to `last` as the rotation gives them. The k-th fair day held
    since the anchor goes to venue k mod n, and a week the holiday policy closes is skipped
    without using up a venue, so no kecamatan loses its turn to Lebaran."""
    order = fair.order
    rule = fair.rotation
    day, held, plan = rule.anchor, 0, []
    while day <= last:
        closure = closure_of(fair.schedule, day, holidays)
        venue = None if closure is not None else order[held % len(order)]
        if day >= first:
            name = holiday_name(holidays, day)
            if closure is not None:
                note: Text | None = Text(
                    id=f"{name}. {closure.reason.id}" if name else closure.reason.id,
                    en=closure.reason.en,
                )
            else:
                note = Text(id=f"Hari libur: {name}", en=f"Holiday: {name}") if name else None
            plan.append(FairDay(day, venue, venue, note))
        if venue is not None:
            held += 1
        day += timedelta(weeks=1)
    return plan


def with_edits(plan: list[FairDay], edits: Mapping[date, str | None], fair: Fair) -> list[FairDay]:
    """The plan after an admin's edits: a date moved to another venue, dropped (None), or held
    although the policy skips it. Edits never shift the other weeks: each kecamatan keeps the
    date it was told."""
    edited = []
    for entry in plan:
        if entry.day not in edits:
            edited.append(entry)
            continue
        slug = edits[entry.day]
        venue = fair.venue(slug) if slug else None
        edited.append(
            FairDay(entry.day, entry.planned, venue, entry.note, edited=venue != entry.planned)
        )
    return edited


def check_edit(fair: Fair, day: date, venue: str | None) -> None:
    """An edit names a fair day of the rotation and a venue of the fair (ValueError otherwise)."""
    if day < fair.rotation.anchor or (day - fair.rotation.anchor).days % 7:
        raise ValueError(f"{day} is not a fair day of {fair.template} (weekday {day:%A})")
    if venue is not None and fair.venue(venue) is None:
        raise ValueError(f"{venue!r} is not a venue of {fair.template}")


def publish_steps(
    plan: list[FairDay],
    published: Mapping[date, str],
    today: date,
    withdrawing: Mapping[date, str] | None = None,
) -> tuple[list[FairDay], list[tuple[date, str]]]:
    """What publishing the plan does: the fair days to open (not yet open at that venue) and the
    (date, venue) sessions published earlier to withdraw (moved or dropped since). Past days
    are left as they were. `withdrawing`: withdrawals a publication began and may not have
    finished (it crashed); one the plan no longer wants is done again, one it wants back is
    opened again (its session may be cancelled already)."""
    to_open = [
        e
        for e in plan
        if e.day >= today and e.venue is not None and published.get(e.day) != e.venue.slug
    ]
    current = {e.day: e.venue.slug if e.venue else None for e in plan}
    begun = [(day, slug) for day, slug in (withdrawing or {}).items() if published.get(day) != slug]
    to_withdraw = [
        (day, slug)
        for day, slug in sorted({*published.items(), *begun})
        if day >= today and day in current and current[day] != slug
    ]
    return to_open, to_withdraw
