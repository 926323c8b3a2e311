"""Call-next rules (not yet wired into the queue service): properties over long simulated runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from services.queue.rules import CallPolicy, CounterMemory, Waiting, choose

T0 = datetime(2026, 11, 29, 2, 0, tzinfo=UTC)
POLICY = CallPolicy(normal_per_priority=3, max_wait=timedelta(minutes=45))


def ticket(n: int, minute: float, *, service: str = "KIA", priority: bool = False,
           request: str | None = None, appointment: float | None = None) -> Waiting:  # fmt: skip
    return Waiting(
        ticket_id=f"t{n:04d}",
        request_id=request or f"r{n}",
        service=service,
        queued_at=T0 + timedelta(minutes=minute),
        priority=priority,
        appointment_at=T0 + timedelta(minutes=appointment) if appointment is not None else None,
    )


def test_fifo_within_a_line() -> None:
    line = [ticket(2, 5), ticket(1, 1), ticket(3, 9)]
    assert (
        choose(line, ["KIA"], set(), CounterMemory(), T0 + timedelta(minutes=10), POLICY) == line[1]
    )


def test_a_citizen_at_another_booth_is_held_not_skipped_for_ever() -> None:
    line = [ticket(1, 1, request="siti"), ticket(2, 2)]
    now = T0 + timedelta(minutes=5)
    assert choose(line, ["KIA"], {"siti"}, CounterMemory(), now, POLICY) == line[1]
    assert choose(line, ["KIA"], set(), CounterMemory(), now, POLICY) == line[0]


def test_priority_every_fourth_call_when_both_wait() -> None:
    line = [ticket(1, 0, priority=True), ticket(2, 1), ticket(3, 2)]
    now = T0 + timedelta(minutes=10)
    assert choose(line, ["KIA"], set(), CounterMemory(2), now, POLICY) == line[1]
    assert choose(line, ["KIA"], set(), CounterMemory(3), now, POLICY) == line[0]


def test_appointment_in_its_window_goes_first_then_falls_back() -> None:
    line = [ticket(1, 0), ticket(2, 20, appointment=25)]
    assert (
        choose(line, ["KIA"], set(), CounterMemory(), T0 + timedelta(minutes=30), POLICY) == line[1]
    )
    late = T0 + timedelta(minutes=36)  # slot 25 + grace 10 has passed: walk-in order
    assert choose(line, ["KIA"], set(), CounterMemory(), late, POLICY) == line[0]


def test_the_counters_first_service_is_preferred_at_equal_wait() -> None:
    line = [ticket(1, 0, service="KK-UBAH"), ticket(2, 0, service="KIA")]
    now = T0 + timedelta(minutes=10)
    assert choose(line, ["KIA", "KK-UBAH"], set(), CounterMemory(), now, POLICY).service == "KIA"


arrivals = st.lists(
    st.tuples(st.floats(0, 120), st.booleans(), st.sampled_from(["KIA", "KTP-CETAK"]),
              st.integers(0, 30)),
    min_size=1, max_size=60,
)  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(arrivals, st.integers(1, 4), st.floats(1, 8))
def test_long_runs_call_each_ticket_once_and_bound_every_wait(
    spec: list[tuple[float, bool, str, int]], counters: int, service_minutes: float
) -> None:
    """Simulate counters calling every `service_minutes`; citizens may hold two tickets."""
    tickets = [
        ticket(n, minute, service=service, priority=prio, request=f"c{citizen}")
        for n, (minute, prio, service, citizen) in enumerate(spec)
    ]
    waiting = list(tickets)
    memories = [CounterMemory() for _ in range(counters)]
    serving: dict[int, Waiting] = {}  # counter -> ticket being served
    called_at: dict[str, datetime] = {}
    now = T0
    while waiting:
        for c in range(counters):
            serving.pop(c, None)  # the previous service at this counter has completed
            busy = {t.request_id for t in serving.values()}
            arrived = [t for t in waiting if t.queued_at <= now]
            pick = choose(arrived, ["KIA", "KTP-CETAK"], busy, memories[c], now, POLICY)
            if pick is None:
                continue
            assert pick.ticket_id not in called_at, "a ticket called twice"
            assert pick.request_id not in busy, "one citizen at two counters"
            # Once aged, nobody who joined later may go first.
            aged_earlier = [
                t for t in arrived if t.queued_at < pick.queued_at
                and now - t.queued_at >= POLICY.max_wait and t.request_id not in busy
            ]  # fmt: skip
            assert not aged_earlier, "an aged ticket was overtaken"
            called_at[pick.ticket_id] = now
            waiting.remove(pick)
            serving[c] = pick
            memories[c] = memories[c].after(pick)
        now += timedelta(minutes=service_minutes)
    assert len(called_at) == len(tickets)
    # The bound: max_wait, plus a slot per ticket that joined no later (they may all have aged
    # first) shared among the counters, plus a slot per other ticket of the same citizen (one
    # booth at a time), plus the slot in progress.
    for t in tickets:
        no_later = sum(1 for o in tickets if o is not t and o.queued_at <= t.queued_at)
        own = sum(1 for o in tickets if o is not t and o.request_id == t.request_id)
        slots = no_later / counters + own + 2
        bound = POLICY.max_wait + timedelta(minutes=service_minutes * slots)
        assert called_at[t.ticket_id] - t.queued_at <= bound


def test_the_priority_ratio_holds_over_a_long_run() -> None:
    """With both classes always waiting (and nobody aged), every fourth call is a priority."""
    policy = CallPolicy(normal_per_priority=3, max_wait=timedelta(days=1))
    line = [ticket(n, n / 10, priority=n % 2 == 0) for n in range(400)]
    memory, calls = CounterMemory(), []
    now = T0 + timedelta(hours=1)
    for _ in range(100):
        pick = choose(line, ["KIA"], set(), memory, now, policy)
        assert pick is not None
        calls.append(pick.priority)
        line.remove(pick)
        memory = memory.after(pick)
    assert calls.count(True) == 25
    assert all(calls[i] for i in range(3, 100, 4))


def test_an_aged_ticket_goes_before_priority_appointments_and_service_order() -> None:
    old = ticket(1, 0, service="KTP-CETAK")  # the counter's second service
    newer = [
        ticket(2, 5, priority=True),
        ticket(3, 6, appointment=40),
        ticket(4, 1, service="KIA"),
    ]
    now = T0 + timedelta(minutes=46)  # `old` has waited 46 > 45 minutes
    memory = CounterMemory(normal_since_priority=3)  # a priority turn is due
    pick = choose([*newer, old], ["KIA", "KTP-CETAK"], set(), memory, now, POLICY)
    assert pick == old
    not_yet = T0 + timedelta(minutes=44)
    assert choose([*newer, old], ["KIA", "KTP-CETAK"], set(), memory, not_yet, POLICY) != old
