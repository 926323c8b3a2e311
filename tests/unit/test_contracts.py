"""The published language: subjects, versioned type names, envelope round trips, parsing."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from giliran.contracts import (
    EVENT_MODELS,
    EVENTS_BY_TYPE,
    CallNext,
    Channel,
    CitizenContact,
    CitizenRef,
    CompleteTicket,
    Event,
    RequestSubmitted,
    TicketCalled,
    UnknownEventType,
    new_event,
    parse_event,
)
from giliran.contracts.subjects import (
    DLQ_SUBJECTS,
    PERSONAL_STREAM,
    PERSONAL_SUBJECTS,
    STREAM,
    STREAM_SUBJECTS,
    command_subject,
    dead_letter_subject,
    event_pattern,
    event_subject,
    event_type,
    site_of,
    stream_of,
)

NOW = datetime(2026, 11, 29, 2, 30, tzinfo=UTC)
MINIMUM_SET = {
    "request.submitted", "request.cancelled", "ticket.issued", "ticket.called",
    "ticket.recalled", "ticket.completed", "ticket.no_show", "ticket.transferred",
    "ticket.cancelled", "counter.opened", "counter.closed", "notification.sent",
    "notification.failed", "feedback.submitted",
}  # fmt: skip
# Added beyond the blueprint's minimum (check-in of bookings, start of service, the status link
# asked for again, a gateway's delivery report, the contact on its short-lived stream).
EXTENSIONS = {
    "request.checked_in", "ticket.started", "request.link_requested", "notification.receipt",
    "citizen.contact",
}  # fmt: skip


def test_every_event_of_the_minimum_set_has_a_v1_model() -> None:
    names = {f"{m.entity}.{m.event}" for m in EVENT_MODELS}
    assert names == MINIMUM_SET | EXTENSIONS
    assert set(EVENTS_BY_TYPE) == {f"giliran.{n}.v1" for n in names}


def test_subjects_follow_the_blueprint() -> None:
    assert (
        event_subject("cikarang-utara", "ticket", "called")
        == "giliran.cikarang-utara.ticket.called"
    )
    assert command_subject("cikarang-utara", "queue", "call_next") == (
        "giliran.cikarang-utara.cmd.queue.call_next"
    )
    assert CallNext.subject("x1") == "giliran.x1.cmd.queue.call_next"
    assert CompleteTicket.subject("x1") == "giliran.x1.cmd.queue.complete"
    assert event_type("ticket", "called", 1) == "giliran.ticket.called.v1"
    assert STREAM_SUBJECTS == ["giliran.*.*.*"]
    assert site_of("giliran.botram-setu.ticket.issued") == "botram-setu"
    assert dead_letter_subject("giliran.a.ticket.called", "notify") == (
        "giliran.a.dlq.notify.ticket.called"
    )
    assert dead_letter_subject("garbage", "notify") == "giliran.unknown.dlq.notify.unknown.unknown"


def test_dead_letters_never_land_in_the_event_stream() -> None:
    """Event subjects have exactly four tokens, personal ones five, dead letters six: the
    streams cannot overlap."""
    assert len(STREAM_SUBJECTS[0].split(".")) == 4
    assert len(PERSONAL_SUBJECTS[0].split(".")) == 5
    assert len(DLQ_SUBJECTS[0].split(".")) == 6


def test_contacts_have_their_own_stream_and_nothing_else_does() -> None:
    """ADR 0115: only citizen.contact is published on the personal stream, and request.submitted
    has no contact on it any more (its old fields stay readable)."""
    subject = CitizenContact.subject_for("cikarang-utara")
    assert subject == "giliran.cikarang-utara.personal.citizen.contact"
    assert stream_of(subject) == PERSONAL_STREAM
    assert dead_letter_subject(subject, "notify") == (
        "giliran.cikarang-utara.dlq.notify.citizen.contact"
    )
    others = [m for m in EVENT_MODELS if m is not CitizenContact]
    assert {stream_of(m.subject_for("x1")) for m in others} == {STREAM}
    assert event_pattern("citizen", "contact") == "giliran.*.personal.citizen.contact"


@pytest.mark.parametrize("bad", ["Cikarang", "a.b", "a b", "*", ">", ""])
def test_subject_tokens_are_checked(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid"):
        event_subject(bad, "ticket", "called")


def _called() -> Event[TicketCalled]:
    return new_event(
        TicketCalled(
            ticket_id="r1-KIA",
            request_id="r1",
            session_id="cikarang-utara-20261129",
            service="KIA",
            number="K-001",
            issued_at=NOW,
            counter="2",
            called_at=NOW,
        ),
        site="cikarang-utara",
        source="queue",
        at=NOW,
    )


def test_envelope_is_cloudevents_shaped_and_round_trips() -> None:
    event = _called()
    raw = event.to_json_dict()
    assert raw["specversion"] == "1.0"
    assert raw["type"] == "giliran.ticket.called.v1"
    assert raw["source"] == "giliran/queue"
    assert raw["subject"] == "cikarang-utara"
    assert raw["time"].endswith("Z")
    assert len(raw["id"]) == 26  # ULID
    assert event.nats_subject == "giliran.cikarang-utara.ticket.called"
    parsed = parse_event(json.dumps(raw).encode())
    assert parsed == event
    assert isinstance(parsed.data, TicketCalled)


def test_event_ids_are_unique_and_time_ordered() -> None:
    ids = [_called().id for _ in range(200)]
    assert len(set(ids)) == 200
    assert [i[:10] for i in ids] == sorted(i[:10] for i in ids)


def test_unknown_types_are_told_apart_from_malformed_events() -> None:
    raw = _called().to_json_dict()
    with pytest.raises(UnknownEventType):
        parse_event({**raw, "type": "giliran.ticket.teleported.v1"})
    with pytest.raises(ValidationError):
        parse_event({**raw, "data": {**raw["data"], "number": "not a number"}})
    with pytest.raises(ValidationError):
        parse_event({**raw, "time": "2026-11-29T02:30:00"})  # naive time
    with pytest.raises(ValidationError):
        parse_event(b"{not json")


def test_a_full_nik_cannot_travel_on_the_bus() -> None:
    with pytest.raises(ValidationError):
        CitizenRef(nik_masked="3216094512900001")
    ok = CitizenRef(nik_masked="************0001", phone="+6281234567890")
    request = RequestSubmitted(
        request_id="r1",
        session_id="s",
        services=["KIA"],
        channel=Channel.KIOSK,
        citizen=ok,
        submitted_at=NOW,
    )
    assert "3216094512900001" not in request.model_dump_json()


def test_payloads_reject_unknown_fields() -> None:
    raw = _called().to_json_dict()
    with pytest.raises(ValidationError):
        parse_event({**raw, "data": {**raw["data"], "nik": "3216094512900001"}})
