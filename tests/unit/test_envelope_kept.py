"""A consuming process builds the envelope model parse_event validates with once, not again after
every full garbage collection (ADR 0206)."""

from __future__ import annotations

import gc
import weakref
from datetime import UTC, datetime
from typing import Any

import giliran.runtime  # every service process imports it: it keeps the envelope model
from giliran.contracts import Event, TicketCalled, new_event
from giliran.contracts.events import parse_event
from giliran.runtime import ServiceRuntime
from giliran.settings import Settings


def _ticket_called() -> bytes:
    now = datetime.now(UTC)
    called = TicketCalled(
        ticket_id="t-1",
        request_id="r-1",
        session_id="cikarang-utara-20261206",
        service="KTP-CETAK",
        number="A-001",
        issued_at=now,
        counter="1",
        called_at=now,
    )
    return new_event(called, site="cikarang-utara").model_dump_json().encode()


def test_the_envelope_model_outlives_a_full_collection() -> None:
    raw = _ticket_called()
    parse_event(raw)
    envelope = weakref.ref(Event[dict[str, Any]])  # type: ignore[type-var]
    for _ in range(3):
        gc.collect()
        assert parse_event(raw).data.ticket_id == "t-1"
    # The same class all along: parse_event built no new one after the collections (without
    # the runtime's reference each collection dropped it and the next parse built another).
    assert envelope() is not None, "the envelope model was collected and built again"
    assert envelope() is Event[dict[str, Any]] is giliran.runtime.ENVELOPE  # type: ignore[type-var]


def test_a_consuming_process_keeps_the_models_of_the_events_it_parses() -> None:
    runtime = ServiceRuntime("intake", Settings(demo=True))
    runtime.consume("tickets", "giliran.*.ticket.>", {TicketCalled: _no_op})
    raw = _ticket_called()
    parsed = weakref.ref(type(parse_event(raw)))
    gc.collect()
    assert parsed() is not None, "Event[TicketCalled] was collected: the next parse builds it again"
    assert type(parse_event(raw)) is parsed()


async def _no_op(event: Event[Any]) -> None:
    return None
