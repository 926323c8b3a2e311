"""Pure rules behind the contact retention (ADR 0115): links hidden, contacts cut out of dead
letters, a contact's time left, delivery ids that do not encode the number."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

from giliran.bus import seconds_left, without_contact
from giliran.privacy import mask_phone, without_status_link
from services.notify.channels.base import Recipient

NOW = datetime(2026, 12, 6, 2, 0, tzinfo=UTC)


def test_status_links_are_hidden_wherever_they_are_in_a_text() -> None:
    text = "Status: http://gl/s/AbC_-123xyzAbC_-123 lalu https://x.id/s/Zz9-Zz9-Zz9-Zz9-."
    shown = without_status_link(text)
    assert shown == "Status: http://gl/s/… lalu https://x.id/s/…."
    assert without_status_link("Nomor antrean B-001, loket 2.") == "Nomor antrean B-001, loket 2."


def test_a_contact_has_the_time_left_to_its_keep_until() -> None:
    event = {"data": {"keep_until": (NOW + timedelta(hours=2)).isoformat()}}
    assert seconds_left(event, NOW) == 7200
    assert seconds_left({"data": {"keep_until": "2026-12-06T01:00:00Z"}}, NOW) == -3600
    assert seconds_left({"data": {"request_id": "r1"}}, NOW) is None  # not a personal event


def test_a_dead_letter_keeps_the_request_id_and_nothing_that_reaches_the_citizen() -> None:
    event = {
        "id": "e1",
        "type": "giliran.citizen.contact.v1",
        "subject": "cikarang-utara",
        "time": NOW.isoformat(),
        "source": "giliran/intake",
        "data": {"request_id": "r1", "phone": "+6281277884455", "email": "a@b.id"},
    }
    kept = json.loads(without_contact(json.dumps(event).encode()))
    assert kept["data"] == {"request_id": "r1"} and kept["id"] == "e1"
    assert b"8127788" not in without_contact(json.dumps(event).encode())
    assert without_contact(b"\xff not json") == b""
    assert json.loads(without_contact(b"[1, 2]"))["data"] == {"request_id": None}


def test_a_delivery_id_does_not_encode_the_full_number() -> None:
    """notification.sent (kept for ever) carries the delivery id: it must not be a hash of the
    number, which anyone can undo by hashing every Indonesian mobile number."""
    phone = "+6281277884455"
    one = Recipient(address=phone, masked=mask_phone(phone))
    other = Recipient(address="+6281299994455", masked=mask_phone("+6281299994455"))
    assert one.key != hashlib.sha256(phone.encode()).hexdigest()[:16]
    assert one.key == other.key  # same mask, same key: nothing more than the mask is in it
