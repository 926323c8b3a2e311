"""Queue rules without I/O: every action against every status, and the ETA estimate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from giliran.contracts import TicketStatus
from services.queue import domain, eta

NOW = datetime(2026, 11, 29, 2, 30, tzinfo=UTC)  # 09:30 WIB on a Sunday

EXPECTED: dict[str, set[TicketStatus]] = {
    "call": {TicketStatus.WAITING},
    "recall": {TicketStatus.CALLED},
    "start": {TicketStatus.CALLED},
    "complete": {TicketStatus.CALLED, TicketStatus.SERVING},
    "no_show": {TicketStatus.CALLED},
    "recheck_in": {TicketStatus.NO_SHOW},
    "transfer": {TicketStatus.CALLED, TicketStatus.SERVING},
    "cancel": {TicketStatus.WAITING, TicketStatus.CALLED, TicketStatus.SERVING},
}


@pytest.mark.parametrize("action", sorted(EXPECTED))
@pytest.mark.parametrize("status", list(TicketStatus))
def test_every_action_against_every_status(action: domain.Action, status: TicketStatus) -> None:
    if status in EXPECTED[action]:
        domain.check_action(action, "A-001", status)
        return
    with pytest.raises(domain.IllegalTransition) as refused:
        domain.check_action(action, "A-001", status)
    problem = refused.value.problem()
    assert refused.value.http_status == 409
    # Both languages name the ticket and what it is now, so the officer knows what happened.
    assert "A-001" in problem.message_id and "A-001" in problem.message_en
    assert domain.STATUS_WORDS[status][0] in problem.message_id
    assert domain.STATUS_WORDS[status][1] in problem.message_en


def test_terminal_statuses_allow_nothing_but_a_recheck_of_a_no_show() -> None:
    for status in domain.TERMINAL:
        allowed = {a for a, statuses in domain.ALLOWED.items() if status in statuses}
        assert allowed == ({"recheck_in"} if status == TicketStatus.NO_SHOW else set())


def test_numbers_and_derived_ids_are_deterministic() -> None:
    assert domain.format_number("A", 5) == "A-005"
    assert domain.format_number("KB", 1234) == "KB-1234"
    assert domain.transferred_id("r1-KIA", "AKTA-LAHIR") == "r1-KIA~AKTA-LAHIR"
    assert domain.rechecked_id("r1-KIA") == "r1-KIA~R"
    with pytest.raises(ValueError):
        domain.format_number("A", 0)


def test_capacity_shares_a_counter_between_its_lines() -> None:
    counters = [["A"], ["A", "B"], ["B", "C", "D", "E"]]
    assert eta.line_capacity(counters, "A") == pytest.approx(1.5)
    assert eta.line_capacity(counters, "B") == pytest.approx(0.75)
    assert eta.line_capacity(counters, "Z") == 0


def test_eta_uses_the_median_of_recent_service_times() -> None:
    # One 60-minute outlier among 5-minute services barely moves the median.
    paces = [300.0] * 10 + [3600.0]
    quoted = eta.estimate(
        position=3, capacity=2, service_seconds=paces, default=timedelta(minutes=8), now=NOW
    )
    assert quoted == NOW + timedelta(seconds=300 * 3.5 / 2)


def test_eta_without_history_uses_the_default_and_without_counters_is_unknown() -> None:
    quoted = eta.estimate(
        position=0, capacity=1, service_seconds=[], default=timedelta(minutes=8), now=NOW
    )
    assert quoted == NOW + timedelta(minutes=4)
    assert (
        eta.estimate(
            position=0, capacity=0, service_seconds=[60.0], default=timedelta(minutes=8), now=NOW
        )
        is None
    )


def test_eta_follows_only_the_recent_pace() -> None:
    slow_then_fast = [1200.0] * 30 + [240.0] * eta.RECENT
    quoted = eta.estimate(
        position=0, capacity=1, service_seconds=slow_then_fast, default=timedelta(0), now=NOW
    )
    assert quoted == NOW + timedelta(seconds=120)


@given(
    position=st.integers(0, 500),
    capacity=st.floats(0.1, 20),
    paces=st.lists(st.floats(1, 7200), max_size=40),
)
def test_eta_is_later_for_a_later_position(
    position: int, capacity: float, paces: list[float]
) -> None:
    def at(p: int) -> datetime:
        quoted = eta.estimate(
            position=p,
            capacity=capacity,
            service_seconds=paces,
            default=timedelta(minutes=8),
            now=NOW,
        )
        assert quoted is not None
        return quoted

    assert NOW < at(position) < at(position + 1)


def test_a_session_is_shaped_as_its_own_sites_only() -> None:
    """The shape queue and intake both use for a session not seen yet (ADR 0105)."""
    from giliran.contracts.subjects import session_of_site

    assert session_of_site("cikarang-utara", "cikarang-utara-20261206")
    assert session_of_site("cikarang-utara", "cikarang-utara-demo-20261207")
    assert not session_of_site("cikarang-utara", "botram-babelan-20261206")
    assert not session_of_site("botram", "botram-setu-20261205")  # a longer slug's session
    assert not session_of_site("cikarang-utara", "cikarang-utara-x")
    assert not session_of_site("cikarang-utara", "cikarang-utara-2026120")
    assert not session_of_site("cikarang-utara", "cikarang-utara")
