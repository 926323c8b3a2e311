"""The holiday policy and the BOTRAM rotation as pure rules: the real 2026-2027 holiday calendar
(the `holidays` package, Bahasa Indonesia names), a quarter's plan, edits and publication steps,
and the rotation's invariants for any holiday calendar (Hypothesis)."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import holidays as holiday_calendars
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from giliran.catalogue import Catalogue, Fair, load_catalogue
from services.intake import fair_plan, sessions
from services.intake.closures import closure_of

SITES = Path(__file__).parents[2] / "deploy" / "sites"
HOLIDAYS = holiday_calendars.country_holidays(
    "ID", categories=("public", "government"), language="id"
)


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return load_catalogue(SITES)


@pytest.fixture(scope="module")
def botram(catalogue: Catalogue) -> Fair:
    return catalogue.fairs["botram"]


def test_msc_closes_the_whole_lebaran_break_and_opens_other_holidays(catalogue: Catalogue) -> None:
    rule = catalogue.sites["cikarang-utara"].schedule
    # 2027: cuti bersama 9 March, Idul Fitri 10-11, cuti bersama 12 and 15 March.
    for day in range(9, 16):
        assert closure_of(rule, date(2027, 3, day), HOLIDAYS) is not None, day
    # The Sunday before the break (7 March) and after it (21 March) open as usual.
    assert closure_of(rule, date(2027, 3, 7), HOLIDAYS) is None
    assert closure_of(rule, date(2027, 3, 21), HOLIDAYS) is None
    # 2026: Idul Fitri falls on Saturday 21 and Sunday 22 March, cuti bersama 20, 23, 24.
    assert closure_of(rule, date(2026, 3, 22), HOLIDAYS) is not None
    # Idul Adha 2027 (17 May) and its cuti bersama (18 May) close; Waisak (20 May) opens.
    assert closure_of(rule, date(2027, 5, 17), HOLIDAYS) is not None
    assert closure_of(rule, date(2027, 5, 18), HOLIDAYS) is not None
    assert closure_of(rule, date(2027, 5, 20), HOLIDAYS) is None
    # Nyepi, Christmas, Independence Day: open (the product default, DOMAIN.md).
    for day in (date(2027, 3, 8), date(2026, 12, 25), date(2027, 8, 17)):
        assert closure_of(rule, day, HOLIDAYS) is None, day


def test_closed_days_tell_the_reason_and_an_admin_can_open_one(catalogue: Catalogue) -> None:
    site = catalogue.sites["cikarang-utara"]
    from datetime import UTC, datetime

    now = datetime(2027, 3, 1, 3, 0, tzinfo=UTC)
    closed = sessions.closed_days(site, now, HOLIDAYS, days=30)
    by_day = {c.local_date: c for c in closed}
    # Every date of the break that MSC would have opened (holidays and the Sunday) is listed.
    assert set(by_day) == {date(2027, 3, d) for d in (9, 10, 11, 12, 14, 15)}
    assert "Idul Fitri" in by_day[date(2027, 3, 14)].reason_id
    assert all(c.source == "policy" for c in closed)
    assert sessions.scheduled_session(site, date(2027, 3, 14), HOLIDAYS) is None
    lifted = sessions.CalendarOverrides(closures_lifted=frozenset({date(2027, 3, 14)}))
    window = sessions.scheduled_session(site, date(2027, 3, 14), HOLIDAYS, lifted)
    assert window is not None and window.label == "Minggu"
    assert date(2027, 3, 14) not in {
        c.local_date for c in sessions.closed_days(site, now, HOLIDAYS, lifted, days=30)
    }
    # An office closing is told with the admin's note.
    office = sessions.CalendarOverrides(closed={date(2027, 3, 7): "banjir"})
    told = sessions.closed_days(site, now, HOLIDAYS, office, days=10)
    assert (told[0].local_date, told[0].source, told[0].reason_id) == (
        date(2027, 3, 7),
        "office",
        "Kantor tutup: banjir",
    )


def test_the_2027q1_plan_skips_lebaran_without_skipping_a_kecamatan(botram: Fair) -> None:
    first, last = fair_plan.quarter_dates("2027Q1")
    assert (first, last) == (date(2027, 1, 1), date(2027, 3, 31))
    plan = fair_plan.rotation(botram, first, last, HOLIDAYS)
    assert [e.day for e in plan] == [date(2027, 1, 2) + timedelta(weeks=w) for w in range(13)]
    skipped = [e for e in plan if e.venue is None]
    assert [e.day for e in skipped] == [date(2027, 3, 13)]  # inside the Idul Fitri break
    assert skipped[0].note is not None and "Idul Fitri" in skipped[0].note.id
    held = [e.venue.slug for e in plan if e.venue is not None]
    order = [v.slug for v in botram.order]
    start = order.index(held[0])
    assert held == [order[(start + k) % len(order)] for k in range(len(held))]
    # Chinese New Year (Saturday 6 February) is a holiday but not closed: it is noted.
    imlek = next(e for e in plan if e.day == date(2027, 2, 6))
    assert imlek.venue is not None and imlek.note is not None and "Imlek" in imlek.note.id


def test_quarters_follow_each_other(botram: Fair) -> None:
    order = [v.slug for v in botram.order]
    q1 = fair_plan.rotation(botram, *fair_plan.quarter_dates("2027Q1"), HOLIDAYS)
    q2 = fair_plan.rotation(botram, *fair_plan.quarter_dates("2027Q2"), HOLIDAYS)
    last_q1 = [e.venue.slug for e in q1 if e.venue][-1]
    first_q2 = next(e.venue.slug for e in q2 if e.venue)
    assert order.index(first_q2) == (order.index(last_q1) + 1) % len(order)
    # Generating a whole half-year at once gives the same days as the two quarters.
    both = fair_plan.rotation(botram, date(2027, 1, 1), date(2027, 6, 30), HOLIDAYS)
    assert both == q1 + q2


def test_edits_move_or_drop_one_week_and_publication_follows(botram: Fair) -> None:
    plan = fair_plan.rotation(botram, *fair_plan.quarter_dates("2027Q1"), HOLIDAYS)
    moved, dropped, held = date(2027, 1, 9), date(2027, 1, 16), date(2027, 3, 13)
    edited = fair_plan.with_edits(plan, {moved: "setu", dropped: None, held: "babelan"}, botram)
    by_day = {e.day: e for e in edited}
    assert by_day[moved].venue is not None and by_day[moved].venue.slug == "setu"
    assert by_day[moved].edited and by_day[dropped].venue is None and by_day[dropped].edited
    assert by_day[held].venue is not None and by_day[held].planned is None
    untouched = [e for e in edited if e.day not in (moved, dropped, held)]
    assert untouched == [e for e in plan if e.day not in (moved, dropped, held)]

    today = date(2027, 1, 5)
    to_open, to_withdraw = fair_plan.publish_steps(edited, {}, today)
    # Everything held from today on opens; 2 January has passed and is left alone.
    assert {e.day for e in to_open} == {
        e.day for e in edited if e.venue is not None and e.day >= today
    }
    assert to_withdraw == []
    published = {e.day: e.venue.slug for e in to_open if e.venue is not None}
    # Published, then the admin moves 9 January back: that venue's session is withdrawn.
    back = fair_plan.with_edits(plan, {dropped: None, held: "babelan"}, botram)
    to_open, to_withdraw = fair_plan.publish_steps(back, published, today)
    original = next(e for e in plan if e.day == moved)
    assert [(e.day, e.venue.slug if e.venue else None) for e in to_open] == [
        (moved, original.venue.slug if original.venue else None)
    ]
    assert to_withdraw == [(moved, "setu")]
    # Past days are never touched.
    assert fair_plan.publish_steps(back, published, date(2027, 4, 1)) == ([], [])


def test_edits_are_checked(botram: Fair) -> None:
    with pytest.raises(ValueError, match="not a fair day"):
        fair_plan.check_edit(botram, date(2027, 1, 10), "setu")  # a Sunday
    with pytest.raises(ValueError, match="not a venue"):
        fair_plan.check_edit(botram, date(2027, 1, 9), "jakarta-pusat")
    fair_plan.check_edit(botram, date(2027, 1, 9), None)
    for junk in ("2027Q5", "2027-Q1", "27Q1", "2027Q1; drop"):
        with pytest.raises(ValueError):
            fair_plan.quarter_dates(junk)


@settings(max_examples=60, deadline=None)
@given(
    closed_weeks=st.sets(st.integers(min_value=0, max_value=60), max_size=15),
    start_week=st.integers(min_value=0, max_value=40),
    length=st.integers(min_value=1, max_value=20),
)
def test_every_held_week_takes_the_next_venue_whatever_the_holidays(
    botram: Fair, closed_weeks: set[int], start_week: int, length: int
) -> None:
    anchor = botram.rotation.anchor
    closed = {anchor + timedelta(weeks=w): "Hari Raya Idul Fitri" for w in closed_weeks}
    first = anchor + timedelta(weeks=start_week)
    last = first + timedelta(weeks=length - 1)
    plan = fair_plan.rotation(botram, first, last, closed)
    assert len(plan) == length
    order = [v.slug for v in botram.order]
    held_before = sum(1 for w in range(start_week) if anchor + timedelta(weeks=w) not in closed)
    k = held_before
    for entry in plan:
        if entry.day in closed:
            assert entry.venue is None and entry.note is not None
        else:
            assert entry.venue is not None and entry.venue.slug == order[k % len(order)]
            k += 1
