"""MSC sessions: every Sunday and public holiday (incl. cuti bersama), 09:00-11:00 WIB."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import holidays
import pytest
from hypothesis import given
from hypothesis import strategies as st

from giliran.catalogue import SiteDef, load_catalogue
from giliran.settings import REPO_ROOT
from services.intake.domain import (
    SessionClosed,
    demo_session,
    scheduled_session,
    session_for_registration,
)

SITE = load_catalogue(REPO_ROOT / "deploy" / "sites").sites["cikarang-utara"]
ID_HOLIDAYS = holidays.country_holidays("ID", categories=("public", "government"))


def test_a_sunday_session_runs_0900_to_1100_wib() -> None:
    window = scheduled_session(SITE, date(2026, 11, 29), ID_HOLIDAYS)
    assert window is not None
    assert window.session_id == "cikarang-utara-20261129"
    assert window.opens_at == datetime(2026, 11, 29, 2, 0, tzinfo=UTC)
    assert window.closes_at == datetime(2026, 11, 29, 4, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("day", "open_"),
    [
        (date(2026, 11, 30), False),  # Monday
        (date(2026, 11, 28), False),  # Saturday
        (date(2026, 8, 17), True),  # Independence Day (Monday)
        (date(2026, 12, 25), True),  # Christmas (Friday)
        (date(2026, 12, 24), True),  # cuti bersama (GOVERNMENT category)
        (date(2026, 3, 20), True),  # Idul Fitri cuti bersama
    ],
)
def test_sessions_open_on_sundays_and_holidays_only(day: date, open_: bool) -> None:
    assert (scheduled_session(SITE, day, ID_HOLIDAYS) is not None) is open_


def test_a_date_the_office_marked_closed_never_opens() -> None:
    rule = SITE.schedule.model_copy(update={"closed_dates": [date(2026, 11, 29)]})
    closed = SITE.model_copy(update={"schedule": rule})
    assert scheduled_session(closed, date(2026, 11, 29), ID_HOLIDAYS) is None
    now = datetime(2026, 11, 29, 2, 30, tzinfo=UTC)
    adhoc = [demo_session(closed, now)]
    with pytest.raises(SessionClosed):
        session_for_registration(closed, now, ID_HOLIDAYS, adhoc)


def test_an_admin_added_date_opens() -> None:
    rule = SITE.schedule.model_copy(update={"extra_dates": [date(2026, 12, 2)]})
    extra: SiteDef = SITE.model_copy(update={"schedule": rule})
    assert scheduled_session(extra, date(2026, 12, 2), ID_HOLIDAYS) is not None


def test_registration_closes_with_the_session() -> None:
    sunday = datetime(2026, 11, 29, 0, 0, tzinfo=UTC)  # 07:00 WIB: early registration is fine
    assert session_for_registration(SITE, sunday, ID_HOLIDAYS, []).session_id.endswith("1129")
    with pytest.raises(SessionClosed) as closed:
        session_for_registration(SITE, sunday + timedelta(hours=4), ID_HOLIDAYS, [])
    assert "09.00-11.00 WIB" in closed.value.message_id


def test_the_demo_session_is_open_at_any_hour() -> None:
    monday_night = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)  # 22:00 WIB
    window = demo_session(SITE, monday_night)
    chosen = session_for_registration(SITE, monday_night, ID_HOLIDAYS, [window])
    assert chosen.session_id == "cikarang-utara-demo-20261130"
    assert chosen.kind == "adhoc"


@given(st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2030, 12, 31)))
def test_registration_is_accepted_exactly_when_a_session_has_not_closed(moment: datetime) -> None:
    now = moment.replace(tzinfo=UTC)
    local_day = (now + timedelta(hours=7)).date()
    window = scheduled_session(SITE, local_day, ID_HOLIDAYS)
    try:
        chosen = session_for_registration(SITE, now, ID_HOLIDAYS, [])
    except SessionClosed:
        assert window is None or now >= window.closes_at
    else:
        assert window is not None and chosen == window and now < window.closes_at
