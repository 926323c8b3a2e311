"""Notify against real local gateways (HTTP and SMTP on loopback), real NATS and the store."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from giliran.contracts import (
    Channel,
    CitizenRef,
    RequestCancelled,
    RequestSubmitted,
    TicketCalled,
    TicketCompleted,
    TicketIssued,
    new_event,
    new_id,
    utcnow,
)
from giliran.contracts.subjects import DLQ_STREAM, STREAM
from giliran.settings import Settings
from services.notify.domain import sign_webhook
from tests.conftest import (
    RunningService,
    eventually,
    nats_client,
    publish,
    publish_many,
    running,
)
from tests.fakes.gateway import FakeGateway
from tests.fakes.smtp import FakeSmtp

pytestmark = pytest.mark.integration

SITE = "cikarang-utara"
PHONE = "+6281234567890"
FAST_RETRY = {"max_attempts": 3, "base_seconds": 0.05, "max_seconds": 0.2}


def sms_channel(
    gw: FakeGateway, name: str = "sms", path: str = "/sms", **extra: Any
) -> dict[str, Any]:
    """A Zenziva-style form API: userkey/passkey in the form, `to` in local 08... format."""
    return {
        "name": name,
        "type": "http",
        "medium": "sms",
        "url": f"{gw.url}{path}",
        "encoding": "form",
        "fields": {
            "userkey": "u",
            "passkey": "p",
            "to": "{phone_local}",
            "message": "{text}",
            "ref": "{ref}",
        },
        "retry": FAST_RETRY,
        "rate_per_second": 200,
        **extra,
    }


def whatsapp_channel(gw: FakeGateway) -> dict[str, Any]:
    """A Fonnte-style JSON API: Authorization token header, `target` without the plus."""
    return {
        "name": "wa",
        "type": "http",
        "medium": "whatsapp",
        "url": f"{gw.url}/wa",
        "encoding": "json",
        "headers": {"Authorization": "TOKEN"},
        "fields": {"target": "{phone_digits}", "message": "{text}"},
        "cost": "one",
        "retry": FAST_RETRY,
    }


@asynccontextmanager
async def notify_with(
    settings: Settings, tmp_path: Path, channels: list[dict[str, Any]], **config: Any
) -> AsyncIterator[RunningService]:
    path = tmp_path / "notify.yaml"
    path.write_text(yaml.safe_dump({"channels": channels, **config}))
    async with running("notify", settings.model_copy(update={"notify_config": path})) as svc:
        yield svc


def request(consent: bool = True, email: str | None = None) -> Any:
    return new_event(
        RequestSubmitted(
            request_id=new_id(),
            session_id="cikarang-utara-20261129",
            services=["KIA"],
            channel=Channel.ONLINE,
            citizen=CitizenRef(consent=consent, phone=PHONE, email=email),
            submitted_at=utcnow(),
        ),
        site=SITE,
    )


def ticket_events(req: Any, n: int = 1, ahead: int = 0) -> tuple[Any, Any, Any]:
    facts = {
        "ticket_id": f"{req.data.request_id}-KIA-{n}",
        "request_id": req.data.request_id,
        "session_id": req.data.session_id,
        "service": "KIA",
        "number": f"K-{n:03d}",
        "issued_at": utcnow(),
    }
    now = utcnow()
    return (
        new_event(TicketIssued(**facts, waiting_ahead=ahead), site=SITE),
        new_event(TicketCalled(**facts, counter="2", called_at=now), site=SITE),
        new_event(
            TicketCompleted(**facts, counter="2", called_at=now, completed_at=now),
            site=SITE,
        ),
    )


async def deliveries(svc: RunningService, **query: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = (await svc.http.get("/api/v1/deliveries", params=query)).json()[
        "deliveries"
    ]
    return found


async def delivery_in(svc: RunningService, ticket_id: str, status: str) -> dict[str, Any]:
    """The ticket's only delivery, once it has reached `status`."""

    async def reached() -> list[dict[str, Any]] | None:
        found = await deliveries(svc, ticket_id=ticket_id)
        return found if found and found[0]["status"] == status else None

    (delivery,) = await eventually(reached)
    return delivery


async def test_each_channel_sends_each_message_once_even_when_events_come_twice(
    settings: Settings, tmp_path: Path
) -> None:
    async with (
        FakeGateway() as gw,
        notify_with(settings, tmp_path, [sms_channel(gw), whatsapp_channel(gw)]) as svc,
    ):
        req = request()
        events = [req, *ticket_events(req)]
        for event in events:
            await publish(settings, event, msg_id=f"{event.id}-first")
        for event in events:  # at-least-once delivery: everything comes again
            await publish(settings, event, msg_id=f"{event.id}-again")

        await gw.wait_for(6)

        async def all_sent() -> list[dict[str, Any]] | None:
            found = await deliveries(svc, site=SITE)
            return found if sum(d["status"] == "sent" for d in found) == 6 else None

        sent = await eventually(all_sent)
        assert gw.count() == 6 and gw.duplicates() == 0
        sms = [r for r in gw.received if r.path == "/sms"]
        assert [r.form["to"] for r in sms] == ["081234567890"] * 3
        assert "K-001" in sms[0].form["message"] and "GRATIS" in sms[0].form["message"]
        assert "loket 2" in sms[1].form["message"]
        wa = [r for r in gw.received if r.path == "/wa"]
        assert wa[0].headers["authorization"] == "TOKEN"
        assert wa[0].json["target"] == "6281234567890"
        assert {d["recipient"] for d in sent} == {"+6281******890"}
        assert PHONE not in json.dumps(sent)
        assert sorted(d["cost_units"] for d in sent) == [1] * 6
        async with nats_client(settings) as client:
            js = client.jetstream()

            async def sent_events() -> bool:
                info = await js.stream_info(STREAM, subjects_filter="giliran.*.notification.sent")
                return (info.state.subjects or {}).get(f"giliran.{SITE}.notification.sent") == 6

            await eventually(sent_events)


async def test_a_channel_behind_another_still_sends_each_message_of_its_ticket(
    settings: Settings, tmp_path: Path
) -> None:
    """The flake of `..._even_when_events_come_twice` made certain: channels share the ticket's
    document, and a channel whose gateway is slow comes to "called" after the other channel has
    moved the ticket to "completed". What is stale for a channel is what it has itself seen
    (its events come in stream order): its "called" is sent, not dropped."""
    async with (
        FakeGateway() as gw,
        notify_with(settings, tmp_path, [sms_channel(gw), whatsapp_channel(gw)]) as svc,
    ):
        gw.hang(1.5, n=1, path_prefix="/sms")  # the SMS gateway is slow to take the first one
        req = request()
        events = [req, *ticket_events(req)]
        for event in events:
            await publish(settings, event)

        await gw.wait_for(6, within=15)

        async def all_settled() -> list[dict[str, Any]] | None:
            found = await deliveries(svc, site=SITE)
            return found if len(found) == 6 else None

        found = await eventually(all_settled)
        assert sorted((d["channel"], d["template"], d["status"]) for d in found) == sorted(
            (channel, template, "sent")
            for channel in ("sms", "wa")
            for template in ("ticket_issued", "ticket_called", "ticket_completed")
        )
        assert gw.duplicates() == 0


async def test_the_console_channel_fetches_more_per_batch_than_a_paced_gateway(
    settings: Settings, tmp_path: Path
) -> None:
    """ADR 0225: a batch lasts as long as its slowest request's chain of store round trips, so
    the console channel (no wire, no pace) takes 256 events per fetch; a gateway's channel keeps
    64, which its rate limiter and its claims' hold are sized for."""
    async with (
        FakeGateway() as gw,
        notify_with(
            settings, tmp_path, [sms_channel(gw), {"name": "console", "type": "console"}]
        ) as svc,
    ):
        fetches = {c.durable: c.fetch_batch for c in svc.runtime.consumers}
        assert fetches["notify-console"] == 256
        assert fetches["notify-sms"] == 64
        assert fetches["notify-contact_book"] == 64


async def test_without_consent_nobody_is_contacted(settings: Settings, tmp_path: Path) -> None:
    async with (
        FakeGateway() as gw,
        notify_with(
            settings, tmp_path, [sms_channel(gw), {"name": "console", "type": "console"}]
        ) as svc,
    ):
        req = request(consent=False)
        issued, _, _ = ticket_events(req)
        await publish(settings, req)
        await publish(settings, issued)

        async def logged() -> list[dict[str, Any]] | None:
            return await deliveries(svc, ticket_id=issued.data.ticket_id) or None

        found = await eventually(logged)
        assert [(d["channel"], d["recipient"]) for d in found] == [("console", "console")]
        assert gw.count() == 0
        contact = await svc.app.state.notify_store.contact(req.data.request_id)
        assert contact["phone"] is None and contact["consent"] is False


async def test_gateway_errors_are_retried_with_backoff(settings: Settings, tmp_path: Path) -> None:
    async with FakeGateway() as gw, notify_with(settings, tmp_path, [sms_channel(gw)]) as svc:
        gw.fail_next(1, status=503, path_prefix="/sms")
        gw.rate_limit(1, retry_after_seconds=0, path_prefix="/sms")
        req = request()
        issued, _, _ = ticket_events(req)
        await publish(settings, req)
        await publish(settings, issued)
        await gw.wait_for(1)

        delivery = await delivery_in(svc, issued.data.ticket_id, "sent")
        assert delivery["attempts"] == 3
        assert [r.status for r in gw.received] == [503, 429, 200]


async def test_a_gateway_that_keeps_failing_dead_letters_and_reports(
    settings: Settings, tmp_path: Path
) -> None:
    async with FakeGateway() as gw, notify_with(settings, tmp_path, [sms_channel(gw)]) as svc:
        gw.fail_always(status=500, path_prefix="/sms")
        req = request()
        issued, _, _ = ticket_events(req)
        await publish(settings, req)
        await publish(settings, issued)

        delivery = await delivery_in(svc, issued.data.ticket_id, "failed")
        assert delivery["attempts"] == 3 and "HTTP 500" in delivery["last_error"]
        assert gw.count("/sms") == 3
        async with nats_client(settings) as client:
            js = client.jetstream()

            async def parked() -> bool:
                return (await js.stream_info(DLQ_STREAM)).state.messages == 1

            await eventually(parked)
            msg = await js.get_last_msg(DLQ_STREAM, f"giliran.{SITE}.dlq.notify.ticket.issued")
            assert msg.headers is not None and "HTTP 500" in msg.headers["Giliran-Reason"]
            failed_event = json.loads(
                (await js.get_last_msg(STREAM, f"giliran.{SITE}.notification.failed")).data or b""
            )
            assert failed_event["data"]["delivery_id"] == delivery["delivery_id"]

        summary = (await svc.http.get("/api/v1/deliveries/summary", params={"site": SITE})).json()
        assert summary["channels"][0]["failed"] == 1
        page = await svc.http.get("/operator", params={"site": SITE})
        assert "Kirim ulang" in page.text and "+6281******890" in page.text

        # The operator fixes the gateway and presses retry.
        gw.respond_ok(path_prefix="/sms")
        retried = await svc.http.post(
            "/operator/retry",
            data={"delivery_id": delivery["delivery_id"], "site": SITE, "session_id": ""},
        )
        assert retried.status_code == 303
        (after,) = await deliveries(svc, ticket_id=issued.data.ticket_id)
        assert after["status"] == "sent"
        assert gw.count("/sms") == 4
        again = await svc.http.post(f"/api/v1/deliveries/{delivery['delivery_id']}/retry")
        assert again.status_code == 409


async def test_a_refused_message_fails_at_once(settings: Settings, tmp_path: Path) -> None:
    async with FakeGateway() as gw, notify_with(settings, tmp_path, [sms_channel(gw)]) as svc:
        gw.reject(status=400, path_prefix="/sms")
        req = request()
        issued, _, _ = ticket_events(req)
        await publish(settings, req)
        await publish(settings, issued)

        delivery = await delivery_in(svc, issued.data.ticket_id, "failed")
        assert delivery["attempts"] == 1 and gw.count() == 1


async def test_a_burst_of_200_respects_the_gateway_rate_limit(
    settings: Settings, tmp_path: Path
) -> None:
    # Low enough that even a loaded CI box sends faster than this, so the lower bound below
    # shows the limiter (not the machine) set the pace; at 100/s it failed under load (48/s).
    rate = 25
    async with (
        FakeGateway() as gw,
        notify_with(settings, tmp_path, [sms_channel(gw, rate_per_second=rate)]),
    ):
        # 20 citizens with 10 tickets each: their messages are sent concurrently (one request's
        # messages go in order), so without the limiter the gateway would get hundreds a second.
        requests = [request() for _ in range(20)]
        burst = [ticket_events(req, n)[0] for n in range(1, 11) for req in requests]
        await publish_many(settings, [*requests, *burst])
        await gw.wait_for(200, within=60)
        assert gw.duplicates() == 0
        assert gw.max_in_window(1.0) <= rate + 1
        assert gw.max_in_window(1.0) >= rate // 2  # and the limiter is what held it back


async def test_a_stuck_gateway_does_not_delay_another_channel(
    settings: Settings, tmp_path: Path
) -> None:
    async with FakeGateway() as gw:
        gw.hang(60, path_prefix="/slow")
        channels = [sms_channel(gw), sms_channel(gw, name="slow", path="/slow", timeout_seconds=60)]
        async with notify_with(settings, tmp_path, channels):
            req = request()
            await publish(settings, req)
            for n in range(1, 21):
                issued, _, _ = ticket_events(req, n)
                await publish(settings, issued)
            await gw.wait_for(20, path_prefix="/sms")
            answered_slow = [r for r in gw.received if r.path == "/slow" and r.status is not None]
            assert answered_slow == []  # the slow gateway has not finished even one
            gw.release()


async def test_a_call_that_would_arrive_after_completion_is_dropped(
    settings: Settings, tmp_path: Path
) -> None:
    async with FakeGateway() as gw, notify_with(settings, tmp_path, [sms_channel(gw)]) as svc:
        req = request()
        issued, called, completed = ticket_events(req)
        for event in (req, issued, completed, called):  # "called" reaches notify late
            await publish(settings, event)

        async def settled() -> list[dict[str, Any]] | None:
            found = await deliveries(svc, ticket_id=issued.data.ticket_id)
            # A delivery is listed as "sending" from its first write, before the stale check.
            done = len(found) == 3 and all(d["status"] != "sending" for d in found)
            return found if done else None

        found = {d["template"]: d for d in await eventually(settled)}
        assert found["ticket_called"]["status"] == "dropped"
        assert "stale" in found["ticket_called"]["last_error"]
        assert found["ticket_completed"]["status"] == "sent"
        assert gw.count() == 2


async def test_contacts_are_purged_and_then_never_used(settings: Settings, tmp_path: Path) -> None:
    async with (
        FakeGateway() as gw,
        notify_with(settings, tmp_path, [sms_channel(gw)], contact_retention_hours=1) as svc,
    ):
        req = request()
        issued, called, _ = ticket_events(req)
        await publish(settings, req)
        await publish(settings, issued)
        await gw.wait_for(1)
        store = svc.app.state.notify_store
        assert await store.purge_contacts(utcnow()) == 0  # not yet due
        assert await store.purge_contacts(utcnow() + timedelta(hours=1, minutes=1)) == 1
        contact = await store.contact(req.data.request_id)
        assert (contact["phone"], contact["purged"]) == (None, True)
        await publish(settings, req, msg_id="replayed")  # a replay must not bring it back
        await publish(settings, called)

        async def handled() -> bool:
            metrics = (await svc.http.get("/metrics")).text
            return 'type="giliran.ticket.called.v1"' in metrics

        await eventually(handled)
        assert gw.count() == 1
        assert (await store.contact(req.data.request_id))["phone"] is None


def verify_signature(
    secret: str, header: str, body: bytes, now: float, tolerance: int = 300
) -> bool:
    """A receiving agency's check, written from the documented scheme (not from our code)."""
    parts = dict(p.split("=", 1) for p in header.split(","))
    timestamp = int(parts["t"])
    if abs(now - timestamp) > tolerance:
        return False
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return hmac.compare_digest(expected.hexdigest(), parts["v1"])


async def test_webhooks_carry_events_signed_with_hmac_sha256(
    settings: Settings, tmp_path: Path
) -> None:
    secret = "s3cret-shared-with-the-agency"
    hook = {
        "name": "agency",
        "type": "webhook",
        "url": "",
        "secret": secret,
        "types": ["giliran.ticket.*"],
        "retry": FAST_RETRY,
    }
    async with FakeGateway() as gw:
        hook["url"] = f"{gw.url}/hook"
        async with notify_with(settings, tmp_path, [hook]):
            req = request()
            events = [req, *ticket_events(req)]
            for event in events:
                await publish(settings, event)
            received = await gw.wait_for(3)
            now = datetime.now(UTC).timestamp()
            for r in received:
                signature = r.headers["x-giliran-signature"]
                assert verify_signature(secret, signature, r.body, now)
                assert not verify_signature("not-the-agency-secret", signature, r.body, now)
                assert not verify_signature(secret, signature, r.body, now + 3600)  # replayed
            types = [json.loads(r.body)["type"] for r in received]
            assert types == [
                "giliran.ticket.issued.v1",
                "giliran.ticket.called.v1",
                "giliran.ticket.completed.v1",
            ]  # the request event was not subscribed
            tampered = received[0].body.replace(b"K-001", b"K-999")
            header = received[0].headers["x-giliran-signature"]
            assert not verify_signature(secret, header, tampered, now)
    assert sign_webhook("k" * 16, 1, b"x").startswith("t=1,v1=")


async def test_email_reaches_a_consenting_citizen(settings: Settings, tmp_path: Path) -> None:
    async with FakeSmtp() as smtp:
        channel = {
            "name": "email",
            "type": "email",
            "host": smtp.host,
            "port": smtp.port,
            "starttls": False,
            "sender": "giliran@cikarangutara.go.id",
            "retry": FAST_RETRY,
        }
        async with notify_with(settings, tmp_path, [channel]):
            req = request(email="warga@example.id")
            issued, _, _ = ticket_events(req)
            await publish(settings, req)
            await publish(settings, issued)
            (mail,) = await smtp.wait_for(1)
            assert mail.rcpt_tos == ["warga@example.id"]
            assert mail.message["Subject"] == "Nomor antrean Anda"
            assert "K-001" in mail.message.get_content()


async def test_approaching_is_sent_once_when_the_line_moves_near(
    settings: Settings, tmp_path: Path
) -> None:
    async with (
        FakeGateway() as gw,
        notify_with(settings, tmp_path, [sms_channel(gw)], approaching_ahead=2) as svc,
    ):
        req = request()
        await publish(settings, req)
        tickets = [ticket_events(req, n, ahead=n - 1) for n in range(1, 6)]
        for issued, _, _ in tickets:
            await publish(settings, issued)
        await gw.wait_for(5)
        for n in (0, 1):  # K-001 and K-002 are called: K-004 then K-005 come near
            await publish(settings, tickets[n][1])
        await gw.wait_for(9)

        async def approaching() -> list[str] | None:
            found = await deliveries(svc, site=SITE)
            near = sorted(
                d["ticket_id"][-1] for d in found if d["template"] == "ticket_approaching"
            )
            return near if len(near) == 2 else None

        assert await eventually(approaching) == ["4", "5"]
        texts = [r.form["message"] for r in gw.received if "lagi sebelum" in r.form["message"]]
        assert texts[0].startswith("Giliran: nomor K-004") and "2 nomor lagi" in texts[0]


async def _line_with_one_citizen_fourth(
    settings: Settings, gw: FakeGateway
) -> tuple[list[tuple[Any, Any, Any]], Any]:
    """K-001..K-003 for a citizen without consent (no messages), K-004 for one who consented:
    calling K-001 brings K-004 within 2 of the front."""
    quiet, told = request(consent=False), request()
    await publish(settings, quiet)
    await publish(settings, told)
    tickets = [ticket_events(quiet, n, ahead=n - 1) for n in (1, 2, 3)]
    tickets.append(ticket_events(told, 4, ahead=3))
    for issued, _, _ in tickets:
        await publish(settings, issued)
    await gw.wait_for(1)  # K-004's "issued"
    return tickets, told


async def settled_approaching(svc: RunningService, ticket_id: str) -> dict[str, Any]:
    """The ticket's "your turn is near" delivery, once it is no longer being sent."""

    async def settled() -> dict[str, Any] | None:
        found = await deliveries(svc, ticket_id=ticket_id)
        near = [d for d in found if d["template"] == "ticket_approaching"]
        return near[0] if near and near[0]["status"] != "sending" else None

    delivery: dict[str, Any] = await eventually(settled)
    return delivery


async def test_an_approaching_message_that_failed_is_sent_when_its_event_comes_back(
    settings: Settings, tmp_path: Path
) -> None:
    async with (
        FakeGateway() as gw,
        notify_with(settings, tmp_path, [sms_channel(gw)], approaching_ahead=2) as svc,
    ):
        tickets, _ = await _line_with_one_citizen_fourth(settings, gw)
        gw.fail_next(1, status=503, path_prefix="/sms")
        await publish(settings, tickets[0][1])  # K-001 called: K-004 is near; the gateway fails

        delivery = await settled_approaching(svc, tickets[3][0].data.ticket_id)
        assert (delivery["status"], delivery["attempts"]) == ("sent", 2)
        assert [r.status for r in gw.received] == [200, 503, 200]


async def test_an_approaching_message_whose_ticket_moved_on_before_the_retry_is_dropped(
    settings: Settings, tmp_path: Path
) -> None:
    async with (
        FakeGateway() as gw,
        notify_with(settings, tmp_path, [sms_channel(gw)], approaching_ahead=2) as svc,
    ):
        tickets, _ = await _line_with_one_citizen_fourth(settings, gw)
        # The gateway asks for 3 s; K-004 is called meanwhile, so "your turn is near" is stale.
        gw.rate_limit(1, retry_after_seconds=3, path_prefix="/sms")
        await publish(settings, tickets[0][1])

        async def refused() -> bool:
            return len(gw.received) >= 2

        await eventually(refused)
        await publish(settings, tickets[3][1])  # K-004 called
        await gw.wait_for(2)  # its "called" message, after its "issued"

        delivery = await settled_approaching(svc, tickets[3][0].data.ticket_id)
        assert delivery["status"] == "dropped"
        assert [r.status for r in gw.received] == [200, 429, 200]


async def test_a_lapsed_registration_is_told_it_lapsed_not_that_it_was_cancelled(
    settings: Settings, tmp_path: Path
) -> None:
    async with (
        FakeGateway() as gw,
        notify_with(settings, tmp_path, [sms_channel(gw)]) as svc,
    ):
        lapsed, withdrawn = request(), request()
        now = utcnow()
        await publish(settings, lapsed)
        await publish(settings, withdrawn)
        await publish(settings, new_event(RequestCancelled(
            request_id=lapsed.data.request_id, reason="not_checked_in", cancelled_at=now
        ), site=SITE))  # fmt: skip
        # The citizen withdrew this one themselves: nothing to tell them.
        await publish(settings, new_event(RequestCancelled(
            request_id=withdrawn.data.request_id, reason="citizen", cancelled_at=now
        ), site=SITE))  # fmt: skip
        await gw.wait_for(1)
        (sms,) = [r for r in gw.received if r.path == "/sms"]
        text = sms.form["message"]
        assert "gugur" in text and "kios" in text and "dibatalkan" not in text, text
        assert lapsed.data.request_id[-6:] in text

        async def lapse_sent() -> list[dict[str, Any]]:
            found = await deliveries(svc, site=SITE)
            return [
                d for d in found if d["template"] == "registration_lapsed" and d["status"] == "sent"
            ]

        assert len(await eventually(lapse_sent)) == 1
        await asyncio.sleep(1.0)  # the withdrawn request's event has been handled by now
        assert gw.count() == 1
