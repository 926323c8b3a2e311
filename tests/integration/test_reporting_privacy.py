"""Reporting holds no personal data: citizens registered through the real intake (names, NIKs,
phones, e-mails, with consent, so contacts do travel on the bus) and served by the real queue,
plus survey answers and notification outcomes; then every document in every collection of
reporting's database is scanned for any trace of them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from giliran.contracts import FeedbackSubmitted, NotificationSent, new_event, new_id
from giliran.contracts.subjects import PERSONAL_STREAM, STREAM
from giliran.settings import Settings
from giliran.store import Database, connect
from services.intake.domain import mask_nik, nik_hash
from services.reporting.ikm import ELEMENTS
from tests.conftest import eventually, nats_client, publish_many, running

pytestmark = pytest.mark.integration

CITIZENS = [
    {"name": "Siti Aminah", "nik": "3216094512900001", "phone": "0812-3456-7890",
     "email": "siti.aminah@example.co.id"},
    {"name": "Budi Santoso", "nik": "3216090101850007", "phone": "+62 857 1122 3344",
     "email": "budi@example.com"},
    {"name": "Dewi Lestari", "nik": "3216096607010003", "phone": "081399887766",
     "email": "dewi.l@example.org"},
]  # fmt: skip


def traces(citizen: dict[str, str]) -> list[str]:
    """Every form a citizen's data could take in a stored document."""
    digits = "".join(c for c in citizen["phone"] if c.isdigit()).removeprefix("62").lstrip("0")
    return [
        *citizen["name"].lower().split(),
        citizen["nik"],
        mask_nik(citizen["nik"]),
        nik_hash(citizen["nik"], b"test-nik-hash-key-0123456789abcdefghij"),
        digits,  # inside 08..., +628... and 628... alike
        citizen["email"].lower(),
        citizen["email"].split("@")[0].lower(),
    ]


async def found_in(database: Database, needles: list[str]) -> list[tuple[str, str, Any]]:
    """(collection, needle, document id) for every document holding a needle anywhere."""
    hits = []
    for name in await database.list_collection_names():
        async for doc in database[name].find({}):
            text = json.dumps(doc, default=str).lower()
            hits += [(name, n, doc.get("_id")) for n in needles if n in text]
    return hits


async def test_no_projection_document_holds_personal_data(settings: Settings) -> None:
    needles = [t for c in CITIZENS for t in traces(c)]
    async with (
        running("intake", settings) as intake,
        running("queue", settings) as queue,
        running("reporting", settings) as reporting,
    ):
        request_ids = []
        for citizen in CITIZENS:
            body = {"site": "cikarang-utara", "services": ["KTP-CETAK", "KIA"], "consent": True,
                    **citizen}  # fmt: skip
            r = await intake.http.post("/api/v1/requests", json=body)
            assert r.status_code == 201, r.text
            request_ids.append(r.json()["request_id"])
        called = await queue.http.post("/api/v1/sites/cikarang-utara/counters/1/call-next")
        ticket = called.json()["ticket"]
        await queue.http.post(f"/api/v1/tickets/{ticket['ticket_id']}/complete")
        now = datetime.now(UTC)
        await publish_many(settings, [
            new_event(FeedbackSubmitted(
                feedback_id=new_id(), request_id=request_ids[0], session_id="cikarang-utara-demo",
                service="KTP-CETAK", scores=dict.fromkeys(ELEMENTS, 4), submitted_at=now,
            ), site="cikarang-utara"),
            new_event(NotificationSent(
                delivery_id=new_id(), cause_event_id=new_id(),
                cause_type="giliran.ticket.called.v1",
                request_id=request_ids[0], ticket_id=ticket["ticket_id"], channel="sms",
                template="ticket_called", cost_units=1, sent_at=now,
            ), site="cikarang-utara"),
        ])  # fmt: skip

        day = f"{now.astimezone(ZoneInfo('Asia/Jakarta')):%Y-%m-%d}"

        async def projected() -> bool:
            r = await reporting.http.get(
                "/api/v1/sites/cikarang-utara/summary", params={"date": day}
            )
            s = r.json()
            return (s["submitted"], s["issued"], s["completed"]) == (3, 6, 1) and bool(
                s["notifications"]
            )

        await eventually(projected, within=20)

        # The data did travel on the bus (so the scan below could find it): contacts on their
        # short-lived stream (ADR 0115), the rest on the event stream ...
        async with nats_client(settings) as nc:
            js = nc.jetstream()
            parts: list[bytes] = []
            for stream in (STREAM, PERSONAL_STREAM):
                info = await js.stream_info(stream)
                first, last = info.state.first_seq, info.state.last_seq
                for seq in range(first, last + 1):
                    parts.append((await js.get_msg(stream, seq)).data or b"")
            raw = b"".join(parts).decode().lower()
        on_bus = [n for n in needles if n in raw]
        assert any(n.endswith("@example.co.id") for n in on_bus) and "81234567890" in on_bus

        # ... and the scan finds a trace when there is one ...
        client = connect(settings.mongo_url)
        database = client[settings.database_name("reporting")]
        await database["scan_check"].insert_one({"_id": "x", "note": "call 081234567890"})
        assert [(c, n) for c, n, _ in await found_in(database, needles)] == [
            ("scan_check", "81234567890")
        ]
        await database.drop_collection("scan_check")

        # ... but reporting kept none of it, in any collection.
        collections = await database.list_collection_names()
        assert {"request_facts", "ticket_facts", "ticket_cells", "notification_facts"} <= set(
            collections
        )
        assert await found_in(database, needles) == []
        await client.close()
