"""The pure decisions of a registration (services/intake/registering.py), without I/O: the
applicant checked, the session chosen, the admission rules, and the places claimed in order."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from giliran.catalogue import load_catalogue
from giliran.contracts import Channel, PriorityReason
from services.intake import domain, registering
from services.intake.errors import (
    NikRequired,
    QuotaExhausted,
    RegistrationNotOpen,
    SlotFull,
    TooManyServices,
)
from services.intake.models import BUDGET, SubmitRequest
from services.intake.sessions import CalendarOverrides, SessionWindow

CATALOGUE = load_catalogue(Path(__file__).resolve().parents[2] / "deploy" / "sites")
MSC = CATALOGUE.site("cikarang-utara")
assert MSC is not None
NIK = "3216090101900001"  # born 1 January 1990
ELDER_NIK = "3216090101500001"  # born 1 January 1950
SATURDAY_19_WIB = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)  # online for Sunday is open
FRIDAY_10_WIB = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)  # online for Sunday not yet
SUNDAY_0930_WIB = datetime(2026, 11, 29, 2, 30, tzinfo=UTC)  # the session runs
SUNDAY = "cikarang-utara-20261129"
NONE = CalendarOverrides()
DEMO = SessionWindow(
    "cikarang-utara-demo-20261128",
    "cikarang-utara",
    SATURDAY_19_WIB.date(),
    SATURDAY_19_WIB,
    datetime(2026, 11, 28, 16, 0, tzinfo=UTC),
    "adhoc",
)


def command(**fields: Any) -> SubmitRequest:
    base: dict[str, Any] = {"site": "cikarang-utara", "services": ["KTP-CETAK"], "name": "Siti"}
    return SubmitRequest.model_validate({**base, **fields})


def decide(
    now: datetime, adhoc: list[SessionWindow] | None = None, counted: bool = True, **fields: Any
) -> registering.Plan:
    asked = command(**fields)
    assert MSC is not None
    applicant = registering.check_applicant(asked, MSC, now.date())
    return registering.plan(
        asked, MSC, applicant, now, frozenset(), NONE, adhoc or [], counted_address=counted
    )


def test_the_applicant_services_once_each_in_order_and_at_most_the_sites_maximum() -> None:
    assert MSC is not None
    asked = command(services=["KIA", "KTP-CETAK", "KIA"])
    applicant = registering.check_applicant(asked, MSC, SATURDAY_19_WIB.date())
    assert applicant.services == ("KIA", "KTP-CETAK")
    assert [d.code for d in applicant.defs] == ["KIA", "KTP-CETAK"]
    with pytest.raises(TooManyServices):
        registering.check_applicant(
            command(services=["KIA", "KTP-CETAK", "KK-UBAH", "IKD"]), MSC, SATURDAY_19_WIB.date()
        )
    with pytest.raises(domain.UnknownService):
        registering.check_applicant(command(services=["NOPE"]), MSC, SATURDAY_19_WIB.date())
    with pytest.raises(domain.InvalidNik):
        registering.check_applicant(command(nik="123"), MSC, SATURDAY_19_WIB.date())


@pytest.mark.parametrize("consent", [True, False])
def test_contact_is_kept_only_with_consent(consent: bool) -> None:
    assert MSC is not None
    asked = command(phone="0812-3456-7890", email="a@b.id", consent=consent)
    applicant = registering.check_applicant(asked, MSC, SATURDAY_19_WIB.date())
    if consent:
        assert (applicant.phone, applicant.email) == ("+6281234567890", "a@b.id")
        assert applicant.warnings == ()
    else:
        assert (applicant.phone, applicant.email) == (None, None)
        assert applicant.warnings == ("contact_ignored_without_consent",)


def test_an_online_booking_claims_quota_then_minutes_and_waits_for_check_in() -> None:
    plan = decide(SATURDAY_19_WIB, nik=NIK, session_id=SUNDAY, services=["KTP-CETAK", "KIA"])
    assert plan.session.session_id == SUNDAY and not plan.sandbox and plan.count_address
    assert [(c.what, c.limit, c.amount) for c in plan.claims] == [
        ("KTP-CETAK", 96, 1),
        (BUDGET, 480, 5),
        ("KIA", 48, 1),
        (BUDGET, 480, 10),
    ]
    assert all(isinstance(c.refusal, QuotaExhausted) for c in plan.claims)
    assert not plan.arrived and plan.lapses is not None
    assert plan.priority is None


def test_the_kiosk_during_the_session_is_a_walk_in_and_an_elder_goes_first() -> None:
    plan = decide(SUNDAY_0930_WIB, nik=ELDER_NIK, channel=Channel.KIOSK)
    assert plan.arrived and plan.lapses is None and not plan.count_address
    assert plan.priority is PriorityReason.ELDERLY


def test_an_appointment_claims_its_slot_last() -> None:
    at = datetime(2026, 11, 29, 2, 30, tzinfo=UTC)  # 09:30 WIB
    plan = decide(SATURDAY_19_WIB, nik=NIK, session_id=SUNDAY, appointment_at=at.isoformat())
    assert plan.slot == "0930"
    last = plan.claims[-1]
    assert (last.what, last.limit, last.amount) == ("slot-0930", 10, 1)
    assert isinstance(last.refusal, SlotFull)


def test_no_nik_is_refused_where_a_service_needs_one_online_and_at_the_kiosk() -> None:
    with pytest.raises(NikRequired) as online:
        decide(SATURDAY_19_WIB, session_id=SUNDAY)
    with pytest.raises(NikRequired) as kiosk:
        decide(SUNDAY_0930_WIB, channel=Channel.KIOSK)
    assert "KTP-CETAK" in online.value.message_en and kiosk.value.message_en
    assert online.value.message_en != kiosk.value.message_en  # the kiosk says how to type it


def test_online_outside_the_window_is_refused_the_kiosk_is_not_bound_by_it() -> None:
    with pytest.raises(RegistrationNotOpen):
        decide(FRIDAY_10_WIB, nik=NIK, session_id=SUNDAY)


def test_the_demo_session_is_a_sandbox_without_quotas_window_or_nik() -> None:
    plan = decide(SATURDAY_19_WIB, adhoc=[DEMO], session_id=DEMO.session_id, counted=True)
    assert plan.sandbox and plan.arrived and not plan.count_address
    assert [(c.what, c.limit) for c in plan.claims] == [("KTP-CETAK", None)]


def test_an_exempt_address_is_not_counted() -> None:
    plan = decide(SATURDAY_19_WIB, nik=NIK, session_id=SUNDAY, counted=False)
    assert not plan.count_address
