"""Session rules with admin overrides, time-zone edges, booking windows and appointment slots."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import holidays
import pytest

from giliran.catalogue import load_catalogue
from giliran.settings import REPO_ROOT
from giliran_ops.cli import describe_sessions
from services.intake.errors import InvalidSlot, SessionClosed, SessionNotBookable
from services.intake.sessions import (
    CalendarOverrides,
    check_slot,
    format_local,
    scheduled_session,
    session_for_booking,
    session_for_registration,
    slots,
    upcoming_sessions,
)

CATALOGUE = load_catalogue(REPO_ROOT / "deploy" / "sites")
MSC = CATALOGUE.sites["cikarang-utara"]
FAIR = CATALOGUE.sites["botram-setu"]
ID_HOLIDAYS = holidays.country_holidays("ID", categories=("public", "government"))
FRIDAY = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)  # 10:00 WIB


def test_0900_wib_is_0200_utc_and_the_local_date_decides() -> None:
    window = scheduled_session(MSC, date(2026, 11, 29), ID_HOLIDAYS)
    assert window is not None
    assert (window.opens_at, window.closes_at) == (
        datetime(2026, 11, 29, 2, 0, tzinfo=UTC),
        datetime(2026, 11, 29, 4, 0, tzinfo=UTC),
    )
    # Saturday 17:00 UTC is already Sunday 00:00 WIB: a walk-in then joins Sunday's session.
    late_saturday_utc = datetime(2026, 11, 28, 17, 0, tzinfo=UTC)
    chosen = session_for_registration(MSC, late_saturday_utc, ID_HOLIDAYS, [])
    assert chosen.session_id == "cikarang-utara-20261129"
    assert format_local(window.opens_at, MSC.timezone) == "Minggu, 29 November 2026 pukul 09.00 WIB"


def test_overrides_add_remove_close_and_cancel() -> None:
    overrides = CalendarOverrides(
        holidays_added={date(2026, 12, 2): "Pilkada"},
        holidays_removed=frozenset({date(2026, 12, 25)}),
        closed={date(2026, 12, 6): "renovasi"},
        cancelled={"cikarang-utara-20261213": "banjir"},
    )
    ahead = upcoming_sessions(MSC, FRIDAY, ID_HOLIDAYS, overrides, days=30, include_cancelled=True)
    by_date = {w.local_date: w for w in ahead}
    assert by_date[date(2026, 12, 2)].label == "Pilkada"
    assert date(2026, 12, 25) not in by_date  # removed holiday, and a Friday
    assert date(2026, 12, 6) not in by_date  # closed, though a Sunday
    assert by_date[date(2026, 12, 13)].cancelled
    assert date(2026, 12, 13) not in {
        w.local_date for w in upcoming_sessions(MSC, FRIDAY, ID_HOLIDAYS, overrides, days=30)
    }
    # A closed date beats every reason to open, including an admin-added session.
    both = CalendarOverrides(
        closed={date(2026, 12, 5): "x"}, sessions_added={date(2026, 12, 5): (time(8), time(12))}
    )
    assert scheduled_session(FAIR, date(2026, 12, 5), ID_HOLIDAYS, both) is None


def test_a_fair_opens_only_on_added_days_with_its_own_hours() -> None:
    assert upcoming_sessions(FAIR, FRIDAY, ID_HOLIDAYS, days=60) == []
    added = CalendarOverrides(sessions_added={date(2026, 12, 5): (time(7, 30), time(12))})
    [window] = upcoming_sessions(FAIR, FRIDAY, ID_HOLIDAYS, added, days=60)
    assert window.opens_at == datetime(2026, 12, 5, 0, 30, tzinfo=UTC)
    with pytest.raises(SessionClosed) as closed:
        session_for_registration(FAIR, FRIDAY, ID_HOLIDAYS, [], added)
    assert "Sabtu, 5 Desember 2026 pukul 07.30 WIB" in closed.value.message_id
    assert "MSC" not in closed.value.message_id  # a fair has no MSC rule to quote


def test_booking_opens_days_ahead_and_closes_with_the_session() -> None:
    assert session_for_booking(MSC, "cikarang-utara-20261129", FRIDAY, ID_HOLIDAYS).kind
    for bad, why in [
        ("cikarang-utara-20261213", "7 days"),  # 16 days ahead, the window is 7
        ("cikarang-utara-20261130", "no session"),  # a Monday
        ("cikarang-utara-2026xx29", "unknown"),
        ("botram-setu-20261129", "unknown"),
        ("cikarang-utara-20261122", "no session"),  # a Sunday already past: no, it is over
    ]:
        with pytest.raises(SessionNotBookable) as refused:
            session_for_booking(MSC, bad, FRIDAY, ID_HOLIDAYS)
        assert refused.value.field == "session_id"
        assert why in refused.value.message_en or "over" in refused.value.message_en, bad


def test_slots_split_the_window_and_only_open_ones_can_be_taken() -> None:
    window = scheduled_session(MSC, date(2026, 11, 29), ID_HOLIDAYS)
    assert window is not None
    starts = slots(window, 30)
    assert [f"{s:%H:%M}" for s in starts] == ["02:00", "02:30", "03:00", "03:30"]  # UTC
    assert check_slot(window, 30, starts[1], FRIDAY, MSC.timezone) == "0930"
    with pytest.raises(InvalidSlot):
        check_slot(window, 30, starts[1] + timedelta(minutes=5), FRIDAY, MSC.timezone)
    during = datetime(2026, 11, 29, 3, 10, tzinfo=UTC)  # 10:10 WIB: 09:00 and 09:30 are over
    with pytest.raises(InvalidSlot) as gone:
        check_slot(window, 30, starts[0], during, MSC.timezone)
    assert "10.00, 10.30" in gone.value.message_id


def test_giliran_up_lists_a_sunday_and_a_weekday_holiday() -> None:
    ahead = upcoming_sessions(MSC, FRIDAY, ID_HOLIDAYS, days=60)
    rows = [
        {
            "kind": w.kind,
            "cancelled": w.cancelled,
            "date": w.local_date.isoformat(),
            "weekday_id": format_local(w.opens_at, MSC.timezone).split(",")[0],
            "opens_local": "09:00",
            "closes_local": "11:00",
            "label": w.label,
        }
        for w in ahead
    ]
    lines = describe_sessions("cikarang-utara", rows)
    assert lines[1].split() == ["Minggu", "2026-11-29", "09:00-11:00", "WIB", "(Minggu)"]
    assert "Kamis   2026-12-24" in lines[-1]  # cuti bersama Natal, a Thursday
    print("\n".join(lines))


def test_holiday_dates_the_msc_opens_on_in_the_next_twelve_months() -> None:
    """Not a fixed list (the `holidays` release decides estimated dates): every weekday
    session in a year comes from a holiday, and the known anchors are there."""
    ahead = upcoming_sessions(MSC, FRIDAY, ID_HOLIDAYS, days=365)
    holidays_open = [w for w in ahead if w.label != "Minggu"]
    print("\n" + "\n".join(f"{w.local_date} {w.local_date:%a} {w.label}" for w in holidays_open))
    days = {w.local_date for w in holidays_open}
    assert {date(2026, 12, 25), date(2027, 1, 1), date(2027, 8, 17)} <= days
    assert all(w.local_date in ID_HOLIDAYS for w in holidays_open)
    sundays = [w for w in ahead if w.label == "Minggu"]
    assert len(sundays) + len([d for d in days if d.weekday() == 6]) == 52
