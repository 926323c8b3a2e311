"""Contact data outlives no retention: after a whole visit and its retention, no stream, store of
notify, delivery API, operator page or log holds the citizen's phone, e-mail or status link."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import nats
import pytest
from prometheus_client import CollectorRegistry

from giliran.bus import (
    DEFAULT_CONTACT_RETENTION_SECONDS,
    ConsumerMetrics,
    EventConsumer,
    ensure_streams,
    publish_event,
)
from giliran.contracts import (
    CitizenContact,
    CitizenRef,
    Event,
    TicketIssued,
    new_event,
    new_id,
    utcnow,
)
from giliran.contracts.subjects import DLQ_STREAM, PERSONAL_STREAM, STREAM, personal_events
from giliran.errors import Unprocessable
from giliran.settings import Settings
from giliran.store import Inbox, connect
from tests.conftest import eventually, publish, request_event, running
from tests.e2e.personal_data import stream_messages

pytestmark = pytest.mark.integration

SITE = "cikarang-utara"
RETENTION_SECONDS = 15.0
PHONE_WRITTEN = "0812-7788-4455"
# Every way the number could be written down: as typed, E.164, national, digits only.
PHONE_FORMS = ("0812-7788-4455", "+6281277884455", "081277884455", "6281277884455", "77884455")
EMAIL = "siti.retensi@contoh-desa.id"


async def store_documents(settings: Settings, service: str) -> list[str]:
    """Every document of every collection of one service's database, as JSON."""
    client = connect(settings.mongo_url)
    try:
        db = client[settings.database_name(service)]  # type: ignore[arg-type]
        docs: list[str] = []
        for name in await db.list_collection_names():
            async for doc in db[name].find({}):
                docs.append(f"{name}: {json.dumps(doc, default=str)}")
        return docs
    finally:
        await client.close()


def hits(where: str, texts: list[str] | list[bytes], needles: list[str]) -> list[str]:
    found = []
    for text in texts:
        plain = text.decode(errors="replace") if isinstance(text, bytes) else text
        found += [f"{where}: {needle}" for needle in needles if needle in plain]
    return found


async def test_nothing_that_reaches_the_citizen_outlives_the_contact_retention(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="giliran.notify")
    settings = settings.model_copy(
        update={"contact_retention_hours": RETENTION_SECONDS / 3600, "public_url": "http://gl"}
    )
    async with (
        running("intake", settings) as intake,
        running("queue", settings) as queue,
        running("notify", settings) as notify,
        running("reporting", settings) as reporting,
        await nats.connect(settings.nats_url) as client,
    ):
        submitted = await intake.http.post(
            "/api/v1/requests",
            json={
                "site": SITE,
                "services": ["KTP-CETAK"],
                "name": "Siti Retensi",
                "nik": "3216094512900001",
                "phone": PHONE_WRITTEN,
                "email": EMAIL,
                "consent": True,
            },
        )
        assert submitted.status_code == 201, submitted.text
        token = submitted.json()["status_page_url"].rsplit("/s/", 1)[1]
        needles = [*PHONE_FORMS, EMAIL, token]

        called = await queue.http.post(f"/api/v1/sites/{SITE}/counters/1/call-next")
        assert called.status_code == 200, called.text
        ticket_id = called.json()["ticket"]["ticket_id"]
        done = await queue.http.post(f"/api/v1/tickets/{ticket_id}/complete")
        assert done.status_code == 200, done.text

        async def three_sent() -> list[dict[str, Any]] | None:
            r = await notify.http.get("/api/v1/deliveries", params={"ticket_id": ticket_id})
            found: list[dict[str, Any]] = r.json()["deliveries"]
            return found if [d["status"] for d in found] == ["sent"] * 3 else None

        # Within the retention the citizen is reached, with their status link: what the scans
        # below look for was really there.
        sent = await eventually(three_sent, within=RETENTION_SECONDS)
        notify_docs = await store_documents(settings, "notify")
        assert hits("notify", notify_docs, [f"/s/{token}", "+6281277884455", EMAIL])
        assert all(f"/s/{token}" not in str(d["text"]) for d in sent)  # operators: no link

        async def leftovers() -> list[str]:
            found: list[str] = []
            for stream, messages in (await stream_messages(client)).items():
                found += hits(f"stream {stream}", messages, needles)
            for service in ("notify", "queue", "reporting"):
                found += hits(f"{service} store", await store_documents(settings, service), needles)
            api = await notify.http.get("/api/v1/deliveries", params={"site": SITE})
            found += hits("delivery API", [api.text], needles)
            page = await notify.http.get("/operator", params={"site": SITE})
            found += hits("operator page", [page.text], needles)
            found += hits("logs", [r.getMessage() for r in caplog.records], needles)
            return found

        # Past the retention (and one purge round), nothing is left anywhere.
        for _ in range(int(RETENTION_SECONDS) + 30):
            left = await leftovers()
            if not left:
                break
            await asyncio.sleep(1.0)
        assert left == [], f"still there after the retention: {sorted(set(left))}"
        streams = await stream_messages(client)
        assert {STREAM, DLQ_STREAM, PERSONAL_STREAM} <= set(streams)
        # Replay and reporting keep everything else: the visit is still in GILIRAN.
        assert any(b"request.submitted" in m for m in streams[STREAM])
        day = datetime.now(ZoneInfo("Asia/Jakarta")).date().isoformat()
        summary = await reporting.http.get(f"/api/v1/sites/{SITE}/summary", params={"date": day})
        assert summary.json()["completed"] == 1


async def test_a_contact_whose_time_ran_out_in_the_outbox_is_never_published(
    settings: Settings,
) -> None:
    """NATS was away longer than the retention: the relay drops the contact instead of giving
    it a fresh retention on the stream; a live one carries a TTL ending at its keep_until."""
    now = utcnow()

    def contact(keep: timedelta) -> Any:
        return new_event(
            CitizenContact(
                request_id=new_id(),
                session_id="s",
                phone="+6281277884455",
                submitted_at=now - timedelta(hours=49),
                keep_until=now + keep,
            ),
            site=SITE,
        )

    async with await nats.connect(settings.nats_url) as client:
        js = client.jetstream()
        await ensure_streams(js)
        assert not await publish_event(js, contact(timedelta(seconds=-1)).to_json_dict())
        live = contact(timedelta(hours=1))
        assert await publish_event(js, live.to_json_dict())
        info = await js.stream_info(PERSONAL_STREAM)
        assert info.state.messages == 1
        assert info.config.max_age == DEFAULT_CONTACT_RETENTION_SECONDS
        msg = await js.get_msg(PERSONAL_STREAM, info.state.last_seq)
        assert (msg.headers or {}).get("Nats-TTL") in ("3599s", "3600s")
        assert (await js.stream_info(STREAM)).state.messages == 0


async def test_a_dead_lettered_contact_keeps_its_request_id_and_not_the_contact(
    settings: Settings,
) -> None:
    """Dead letters are kept for ever; one parked from the personal stream must not keep what
    the stream itself forgets."""
    client = connect(settings.mongo_url)
    inbox = Inbox(client[f"{settings.db_prefix}_deadcontact"], "test-contacts")
    await inbox.ensure_indexes()

    async def refuse(event: Event[Any]) -> None:
        raise Unprocessable("this contact cannot be filed")

    consumer = EventConsumer(
        service="notify",
        durable="test-contacts",
        subject=personal_events(),
        handlers={CitizenContact: refuse},
        inbox=inbox,
        metrics=ConsumerMetrics.create(CollectorRegistry()),
        stream=PERSONAL_STREAM,
    )
    now = utcnow()
    contact = new_event(
        CitizenContact(
            request_id="r-dead",
            session_id="s",
            phone="+6281277884455",
            email=EMAIL,
            status_token="T0kenT0kenT0kenT0ken",
            submitted_at=now,
            keep_until=now + timedelta(hours=1),
        ),
        site=SITE,
    )
    try:
        async with await nats.connect(settings.nats_url) as nc:
            js = nc.jetstream()
            await ensure_streams(js)
            await consumer.start(js)
            await publish_event(js, contact.to_json_dict())

            async def parked() -> int:
                return int((await js.stream_info(DLQ_STREAM)).state.messages)

            await eventually(parked)
            await consumer.stop()
            letter = await js.get_msg(DLQ_STREAM, 1)
    finally:
        await client.close()
    assert letter.subject == f"giliran.{SITE}.dlq.notify.citizen.contact"
    body = json.loads(letter.data or b"{}")
    assert body["data"] == {"request_id": "r-dead"}
    raw = (letter.data or b"").decode() + json.dumps(letter.headers or {})
    assert not [n for n in ("77884455", EMAIL, "T0kenT0kenT0kenT0ken") if n in raw]
    assert "unprocessable" in (letter.headers or {}).get("Giliran-Reason", "")


async def test_a_ticket_that_comes_before_its_contact_waits_for_it_and_then_links_the_status(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """The contact and the ticket travel on two streams: notify's consumers may see the ticket
    first. It is then retried, not sent to nobody, and goes out once the contact is filed."""
    caplog.set_level(logging.INFO, logger="giliran.notify")
    settings = settings.model_copy(update={"public_url": "http://gl"})
    req = request_event(["KIA"], citizen=CitizenRef(consent=True))
    token = "T0kenT0kenT0kenT0ken"
    now = utcnow()
    contact = new_event(
        CitizenContact(
            request_id=req.data.request_id,
            session_id=req.data.session_id,
            phone="+6281277884455",
            status_token=token,
            submitted_at=now,
            keep_until=now + timedelta(hours=1),
        ),
        site=SITE,
    )
    issued = new_event(
        TicketIssued(
            ticket_id=f"{req.data.request_id}-KIA",
            request_id=req.data.request_id,
            session_id=req.data.session_id,
            service="KIA",
            number="K-001",
            issued_at=now,
            waiting_ahead=0,
        ),
        site=SITE,
    )
    async with running("notify", settings) as notify:
        await publish(settings, req)
        await publish(settings, issued)

        async def retried() -> bool:
            metrics = (await notify.http.get("/metrics")).text
            return (
                'outcome="retried",type="giliran.ticket.issued.v1"' in metrics
                and 'outcome="handled",type="giliran.request.submitted.v1"' in metrics
            )

        await eventually(retried)  # the ticket came back for want of its contact
        query = {"ticket_id": issued.data.ticket_id}
        assert (await notify.http.get("/api/v1/deliveries", params=query)).json() == {
            "deliveries": []
        }
        await publish(settings, contact)

        async def sent() -> list[dict[str, Any]] | None:
            r = await notify.http.get(
                "/api/v1/deliveries", params={"ticket_id": issued.data.ticket_id}
            )
            found: list[dict[str, Any]] = r.json()["deliveries"]
            return found if found and found[0]["status"] == "sent" else None

        (delivery,) = await eventually(sent, within=30)
        assert delivery["recipient"] == "+6281******455"
        assert "/s/…" in delivery["text"] and token not in delivery["text"]
        stored = await notify.app.state.notify_store.get(delivery["delivery_id"])
        assert f"http://gl/s/{token}" in stored["text"]  # what the citizen's phone received
        assert token not in caplog.text and "77884455" not in caplog.text
