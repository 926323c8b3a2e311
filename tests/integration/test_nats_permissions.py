"""NATS users and permissions: the checked-in config follows the code, the real server refuses
every forbidden publish and subscribe, and the allowed flows still work end to end."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from zoneinfo import ZoneInfo

import nats
import pytest
from pydantic import SecretStr

from giliran.bus import ensure_streams
from giliran.catalogue import load_catalogue
from giliran.contracts import EVENT_MODELS, CallNext
from giliran.contracts.subjects import PERSONAL_STREAM, STREAM
from giliran.settings import SERVICES, Settings
from giliran_ops.cli import NATS_CONFIG, build_service, nats_config_text
from giliran_ops.natsauth import service_grants
from tests.conftest import SecuredNats, eventually, running

pytestmark = pytest.mark.integration

SITE_A = "cikarang-utara"
SITE_B = "botram-babelan"


def test_checked_in_config_is_what_the_code_implies() -> None:
    """deploy/nats/giliran.conf cannot drift from the services: regenerate it when this fails
    (`giliran nats-config > deploy/nats/giliran.conf`)."""
    assert NATS_CONFIG.read_text() == nats_config_text(Settings(notify_config=None))


def test_sites_used_here_exist() -> None:
    sites = load_catalogue(Settings().catalogue_dir).sites
    assert SITE_A in sites and SITE_B in sites


class Refusals:
    """Collects the server's permission violations reported to one connection."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    async def on_error(self, error: Exception) -> None:
        self.errors.append(str(error))

    def violations(self) -> list[str]:
        return [e for e in self.errors if "permissions violation" in e.lower()]


@asynccontextmanager
async def as_user(secured: SecuredNats, user: str) -> AsyncIterator[tuple[nats.NATS, Refusals]]:
    refusals = Refusals()
    client = await secured.connect(user, error_cb=refusals.on_error)
    try:
        yield client, refusals
    finally:
        await client.close()


async def refused_publish(client: nats.NATS, refusals: Refusals, subject: str) -> bool:
    """Publish, then round-trip to the server: a violation arrives before the PONG."""
    before = len(refusals.violations())
    await client.publish(subject, b"{}")
    await client.flush(timeout=5)
    await asyncio.sleep(0.02)  # the error callback runs as its own task
    return len(refusals.violations()) > before


def _published_by() -> dict[str, set[str]]:
    probe = Settings(nik_hash_key=SecretStr("probe"), notify_config=None)
    return {
        name: {m.type_name() for m in build_service(name, probe)[1].published} for name in SERVICES
    }


async def test_each_service_may_publish_only_its_own_event_types(
    secured_nats: SecuredNats,
) -> None:
    published_by = _published_by()
    async with as_user(secured_nats, "ops") as (ops, _):
        await ensure_streams(ops.jetstream())
    allowed_total = refused_total = 0
    for service in SERVICES:
        async with as_user(secured_nats, service) as (client, refusals):
            for model in EVENT_MODELS:
                subject = model.subject_for(SITE_A)
                refused = await refused_publish(client, refusals, subject)
                mine = model.type_name() in published_by[service]
                assert refused != mine, f"{service} publishing {subject}: refused={refused}"
                allowed_total += mine
                refused_total += not mine
    # Every event type has exactly one publisher; the rest of the matrix is refused.
    assert allowed_total == sum(len(p) for p in published_by.values())
    assert refused_total == len(SERVICES) * len(EVENT_MODELS) - allowed_total
    assert refused_total >= 3 * len(EVENT_MODELS) - 4
    # The server stored only the allowed ones: refusals are not merely reported.
    async with as_user(secured_nats, "ops") as (ops, _):
        info = await ops.jetstream().stream_info(STREAM)
        personal = await ops.jetstream().stream_info(PERSONAL_STREAM)  # citizen.contact
        assert info.state.messages + personal.state.messages == allowed_total
        assert personal.state.messages == 1


async def test_notify_cannot_invent_a_called_event_nor_read_other_services_traffic(
    secured_nats: SecuredNats,
) -> None:
    async with as_user(secured_nats, "notify") as (client, refusals):
        assert await refused_publish(client, refusals, f"giliran.{SITE_A}.ticket.called")
        # ... nor forge a dead letter in another service's name,
        assert await refused_publish(client, refusals, f"giliran.{SITE_A}.dlq.queue.ticket.called")
        # ... nor call tickets, nor pull from the queue's durable, nor delete the stream.
        assert await refused_publish(client, refusals, f"giliran.{SITE_A}.cmd.queue.call_next")
        assert await refused_publish(
            client, refusals, "$JS.API.CONSUMER.MSG.NEXT.GILIRAN.queue-requests"
        )
        assert await refused_publish(client, refusals, "$JS.API.STREAM.DELETE.GILIRAN")
        assert await refused_publish(client, refusals, "$JS.API.STREAM.PURGE.GILIRAN")
        # Subscriptions: other users' replies and the queue's commands are out of reach.
        for subject in ("_INBOX.queue.>", "_INBOX.>", f"giliran.{SITE_A}.cmd.queue.call_next"):
            before = len(refusals.violations())
            await client.subscribe(subject)
            await client.flush(timeout=5)
            await asyncio.sleep(0.02)
            assert len(refusals.violations()) > before, f"notify subscribed to {subject}"
        # Its own event is fine.
        assert not await refused_publish(client, refusals, f"giliran.{SITE_A}.notification.sent")


async def test_a_counter_device_commands_only_its_own_site(secured_nats: SecuredNats) -> None:
    device = f"device-{SITE_A}"
    async with as_user(secured_nats, device) as (client, refusals):
        assert await refused_publish(client, refusals, f"giliran.{SITE_B}.cmd.queue.call_next")
        assert await refused_publish(client, refusals, f"giliran.{SITE_B}.cmd.queue.complete")
        assert await refused_publish(client, refusals, f"giliran.{SITE_A}.ticket.called")
        assert await refused_publish(client, refusals, f"giliran.{SITE_A}.cmd.intake.anything")
        assert not await refused_publish(client, refusals, f"giliran.{SITE_A}.cmd.queue.call_next")


async def test_wrong_password_is_refused(secured_nats: SecuredNats) -> None:
    with pytest.raises(Exception, match=r"(?i)authorization"):
        await nats.connect(
            secured_nats.url,
            user="queue",
            password="not-the-password",
            allow_reconnect=False,
            max_reconnect_attempts=0,
            connect_timeout=2,
        )


async def test_allowed_flows_work_end_to_end_with_every_service_on_its_own_user(
    secured_nats: SecuredNats, mongo_url: str
) -> None:
    """Registration → ticket → a device at the site calls it over NATS → notify → reporting,
    each service connected as its own restricted user."""
    base = Settings(
        mongo_url=mongo_url,
        db_prefix=f"t{uuid.uuid4().hex[:12]}",
        nik_hash_key=SecretStr("test-nik-hash-key-0123456789abcdefghij"),
        nik_encryption_key=SecretStr("2sklCeVOsLm_1IFPRqUGUAZ211p0OOuLY686SWDloUo="),
        demo=True,
        outbox_poll_seconds=0.2,
        retry_backoff_seconds=[0.1, 0.2, 0.3, 0.5],
        max_deliver=4,
        ticket_wait_seconds=3.0,
    )

    def own(service: str) -> Settings:
        return secured_nats.settings_for(base, service)

    async with (
        running("intake", own("intake")) as intake,
        running("queue", own("queue")) as queue,
        running("notify", own("notify")) as notify,
        running("reporting", own("reporting")) as reporting,
    ):
        for svc in (intake, queue, notify, reporting):
            ready = await eventually(lambda s=svc: _ready(s), within=15)  # type: ignore[misc]
            assert ready
        submitted = await intake.http.post(
            "/api/v1/requests",
            json={
                "site": SITE_A,
                "services": ["KTP-CETAK"],
                "name": "Siti Aminah",
                "nik": "3216094512900001",
                "phone": "0812-3456-7890",
                "consent": True,
            },
        )
        assert submitted.status_code == 201, submitted.text
        ticket_id = submitted.json()["tickets"][0]["ticket_id"]
        request_id = submitted.json()["request_id"]

        async with as_user(secured_nats, f"device-{SITE_A}") as (device, refusals):
            reply = await device.request(
                CallNext.subject(SITE_A),
                CallNext(site=SITE_A, counter="1").model_dump_json().encode(),
                timeout=5,
            )
            assert b'"ok":true' in reply.data, reply.data
            assert ticket_id.encode() in reply.data
            assert not refusals.violations()

        async def intake_saw_the_call() -> bool:
            # The status page reads intake's record, updated from queue's ticket.called.
            r = await intake.http.get(f"/api/v1/requests/{request_id}")
            return r.status_code == 200 and "called" in r.text

        await eventually(intake_saw_the_call)

        async def notified() -> bool:
            r = await notify.http.get("/api/v1/deliveries", params={"ticket_id": ticket_id})
            return {d["template"] for d in r.json()["deliveries"]} >= {
                "ticket_issued",
                "ticket_called",
            }

        await eventually(notified)

        async def reported() -> bool:
            day = datetime.now(ZoneInfo("Asia/Jakarta")).date().isoformat()
            r = await reporting.http.get(f"/api/v1/sites/{SITE_A}/summary", params={"date": day})
            return r.status_code == 200 and r.json().get("called", 0) >= 1

        await eventually(reported)
        for svc in (intake, queue, notify, reporting):
            assert (await svc.http.get("/readyz")).status_code == 200
        assert all(c.durable for c in queue.runtime.consumers)
        assert service_grants(queue.runtime).allow_responses


async def _ready(svc: object) -> bool:
    response = await svc.http.get("/readyz")  # type: ignore[attr-defined]
    return bool(response.status_code == 200)
