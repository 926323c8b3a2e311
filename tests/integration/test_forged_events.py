"""A consumer trusts a message only as far as the NATS subject it arrived on: a body whose type,
site or source disagrees with the subject is dead-lettered, never handled (ADR 0110). Against a
real nats-server running the checked-in per-service users and permissions."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import nats
import pytest
from nats.js.api import StreamConfig
from pydantic import SecretStr

from giliran.bus import dead_letters, ensure_streams
from giliran.contracts import (
    Channel,
    CitizenRef,
    Event,
    FeedbackSubmitted,
    RequestSubmitted,
    TicketCalled,
    new_event,
    new_id,
    utcnow,
)
from giliran.contracts.subjects import STREAM, STREAM_SUBJECTS
from giliran.settings import Settings
from services.reporting.ikm import ELEMENTS
from tests.conftest import SecuredNats, eventually, running
from tests.integration.test_nats_permissions import as_user, refused_publish

pytestmark = pytest.mark.integration

SITE = "cikarang-utara"
OTHER_SITE = "botram-babelan"
SUNDAY = datetime(2026, 11, 29, 3, 0, tzinfo=UTC)
VICTIM_PHONE = "+6281299990001"


@pytest.fixture
def base(mongo_url: str) -> Settings:
    return Settings(
        mongo_url=mongo_url,
        db_prefix=f"t{uuid.uuid4().hex[:12]}",
        nik_hash_key=SecretStr("test-key-of-sufficient-length-0123456789"),
        nik_encryption_key=SecretStr("2sklCeVOsLm_1IFPRqUGUAZ211p0OOuLY686SWDloUo="),
        session_key=SecretStr("test-session-key-of-sufficient-length-012"),
        demo=True,
        outbox_poll_seconds=0.2,
        retry_backoff_seconds=[0.1, 0.2, 0.3, 0.5],
        max_deliver=4,
    )


def _request(site: str = SITE, **envelope: Any) -> Event[RequestSubmitted]:
    event = new_event(
        RequestSubmitted(
            request_id=new_id(),
            session_id=f"{site}-today",
            services=["KTP-CETAK"],
            channel=Channel.ONLINE,
            citizen=CitizenRef(consent=True, phone=VICTIM_PHONE),
            submitted_at=utcnow(),
        ),
        site=site,
        source="intake",
    )
    return event.model_copy(update=envelope) if envelope else event


def _called(request: Event[RequestSubmitted]) -> Event[TicketCalled]:
    now = utcnow()
    return new_event(
        TicketCalled(
            ticket_id=f"{request.data.request_id}-KTP-CETAK",
            request_id=request.data.request_id,
            session_id=request.data.session_id,
            service="KTP-CETAK",
            number="B-001",
            issued_at=now,
            counter="1",
            called_at=now,
        ),
        site=request.site,
        source="queue",
    )


def _feedback() -> Event[FeedbackSubmitted]:
    return new_event(
        FeedbackSubmitted(
            feedback_id=new_id(),
            request_id=new_id(),
            session_id=f"{SITE}-20261129",
            service="KTP-CETAK",
            scores=dict.fromkeys(ELEMENTS, 1),
            submitted_at=SUNDAY,
        ),
        site=SITE,
        source="intake",
    )


async def _send(client: nats.NATS, subject: str, event: Event[Any]) -> None:
    """Publish into the event stream as a (compromised) service's own NATS user could."""
    body = json.dumps(event.to_json_dict()).encode()
    await client.jetstream().publish(subject, body, headers={"Nats-Msg-Id": new_id()})


async def _parked(secured: SecuredNats, service: str, count: int) -> list[Any]:
    async with as_user(secured, "ops") as (ops, _):
        found = await dead_letters(ops.jetstream(), service)
    return found if len(found) >= count else []


async def test_notify_cannot_make_itself_text_a_number_through_its_own_subject(
    secured_nats: SecuredNats, base: Settings
) -> None:
    """The notify user may publish notification.sent; a body typed request.submitted there
    (with the number to text), then ticket.called on notification.failed, must text nobody."""
    async with as_user(secured_nats, "ops") as (ops, _):
        await ensure_streams(ops.jetstream())
    forged_request = _request()
    forged_call = _called(forged_request)
    async with running("notify", secured_nats.settings_for(base, "notify")) as notify:
        async with as_user(secured_nats, "notify") as (client, refusals):
            await _send(client, f"giliran.{SITE}.notification.sent", forged_request)
            await _send(client, f"giliran.{SITE}.notification.failed", forged_call)
            assert not refusals.violations()  # NATS let them through: only the check stops them
        # The same facts through their real publishers' users are handled (the control).
        genuine_request = _request()
        async with as_user(secured_nats, "intake") as (intake, _):
            await _send(intake, genuine_request.nats_subject, genuine_request)
        async with as_user(secured_nats, "queue") as (queue, _):
            genuine_call = _called(genuine_request)
            await _send(queue, genuine_call.nats_subject, genuine_call)

        async def delivered(ticket_id: str) -> list[dict[str, Any]]:
            r = await notify.http.get("/api/v1/deliveries", params={"ticket_id": ticket_id})
            found: list[dict[str, Any]] = r.json()["deliveries"]
            return found

        async def settled() -> bool:
            return bool(await delivered(genuine_call.data.ticket_id))  # the control went through

        await eventually(settled, within=20)
        assert await delivered(forged_call.data.ticket_id) == [], "notify texted the forged number"
        # Notify's citizen channels read only request and ticket subjects (ADR 0230): what is
        # put on notify's own subjects is never delivered to them, so never handled. (Before,
        # both forgeries were delivered and parked as disagreeing with their subjects.)
        channels = [
            c.durable for c in notify.runtime.consumers if c.durable != "notify-contact_book"
        ]
        async with as_user(secured_nats, "ops") as (ops, _):
            for durable in channels:
                info = await ops.jetstream().consumer_info(STREAM, durable)
                assert info.num_pending == 0, durable
                assert info.delivered.consumer_seq == 2, durable  # the genuine request and call
        assert await _parked(secured_nats, "notify", 1) == []
        contact = await notify.runtime.db["contacts"].find_one(
            {"_id": forged_request.data.request_id}
        )
        assert contact is None


async def test_a_forged_survey_answer_does_not_move_the_ikm(
    secured_nats: SecuredNats, base: Settings
) -> None:
    """feedback.submitted is intake's; notify's user puts one (all 1s) on its own subject, and
    intake's user one for another site's subject and one claiming queue as its source."""
    async with as_user(secured_nats, "ops") as (ops, _):
        await ensure_streams(ops.jetstream())
    async with running("reporting", secured_nats.settings_for(base, "reporting")) as reporting:
        async with as_user(secured_nats, "notify") as (notify, _):
            await _send(notify, f"giliran.{SITE}.notification.sent", _feedback())
        async with as_user(secured_nats, "intake") as (intake, _):
            # The body's site is not the subject's site.
            await _send(intake, f"giliran.{OTHER_SITE}.feedback.submitted", _feedback())
            # The subject and type agree, but the source claims another service.
            spoofed = _feedback().model_copy(update={"source": "giliran/queue"})
            await _send(intake, spoofed.nats_subject, spoofed)
            top = _feedback()
            genuine = top.model_copy(
                update={"data": top.data.model_copy(update={"scores": dict.fromkeys(ELEMENTS, 4)})}
            )
            await _send(intake, genuine.nats_subject, genuine)

        async def ikm() -> dict[str, Any]:
            r = await reporting.http.get(
                f"/api/v1/sites/{SITE}/satisfaction",
                params={"from": "2026-11-29", "to": "2026-11-29"},
            )
            body: dict[str, Any] = r.json()
            return body

        async def settled() -> bool:
            # All four counted (the attack working), or the genuine one counted and the three
            # forgeries parked.
            responses = (await ikm())["responses"]
            return responses >= 4 or (
                responses >= 1 and bool(await _parked(secured_nats, "reporting", 3))
            )

        await eventually(settled, within=20)
        parked = await _parked(secured_nats, "reporting", 3)
        body = await ikm()
        # Only the genuine answer counts: all elements 4 gives the top score.
        assert body["responses"] == 1
        assert body["ikm"] == 100.0
        reasons = " | ".join(p.reason for p in parked)
        assert f"at {SITE}, but it arrived on giliran.{OTHER_SITE}.feedback.submitted" in reasons
        assert "source is not giliran/intake" in reasons


async def test_only_the_stream_owner_may_reshape_the_event_stream(
    secured_nats: SecuredNats,
) -> None:
    """Any service updating GILIRAN to max_msgs 1 would wipe the history: only queue (the stream
    owner, ADR 0111) may update it; every other service is refused by the server."""
    async with as_user(secured_nats, "ops") as (ops, _):
        await ensure_streams(ops.jetstream())
    wipe = f"$JS.API.STREAM.UPDATE.{STREAM}"
    for service in ("intake", "notify", "reporting"):
        async with as_user(secured_nats, service) as (client, refusals):
            assert await refused_publish(client, refusals, wipe), service
            with pytest.raises(Exception):  # noqa: B017 - refused: no answer, a timeout
                await client.jetstream().update_stream(
                    StreamConfig(name=STREAM, subjects=STREAM_SUBJECTS, max_msgs=1), timeout=1
                )
    async with as_user(secured_nats, "queue") as (queue, refusals):
        assert not await refused_publish(queue, refusals, wipe)
    async with as_user(secured_nats, "ops") as (ops, _):
        info = await ops.jetstream().stream_info(STREAM)
        assert info.config.max_msgs in (None, -1)
