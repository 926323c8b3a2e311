"""Gateways judged by their answer, delivery reports, WhatsApp Cloud templates, and gateway words
that echo a citizen's number: against fake gateways over real HTTP, real NATS and the store."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import yaml

from giliran.contracts import (
    DeliveryOutcome,
    NotificationFailed,
    NotificationReceipt,
    NotificationSent,
    new_event,
    utcnow,
)
from giliran.contracts.subjects import STREAM
from giliran.settings import Settings
from services.notify.gateways import receipt_key
from tests.conftest import RunningService, eventually, nats_client, publish, running
from tests.fakes.gateway import FakeGateway, listening_socket, serve_app
from tests.fakes.whatsapp_cloud import FakeWhatsAppCloud
from tests.integration.test_notify_channels import (
    FAST_RETRY,
    PHONE,
    SITE,
    deliveries,
    delivery_in,
    request,
    ticket_events,
)
from tests.integration.test_notify_privacy import leaks

pytestmark = pytest.mark.integration

OTHER_SITE = "botram-babelan"
SECRET = "receipt-secret-0123456789"
# How gateways write the citizen's number back: nationally, internationally, grouped.
ECHOES = ("081234567890", "+62 812 3456 7890", "0812-3456-7890", "6281234567890")


def gateway(gw: FakeGateway, profile: str, **extra: Any) -> dict[str, Any]:
    """A channel for `profile`, shaped like that gateway's documented request."""
    fields: dict[str, Any] = {
        "fonnte": {"target": "{phone_digits}", "message": "{text}"},
        "zenziva": {"userkey": "u", "passkey": "p", "to": "{phone_local}", "message": "{text}"},
        "infobip": {
            "messages": [
                {
                    "destinations": [{"to": "{phone_digits}", "messageId": "{ref}"}],
                    "from": "GILIRAN",
                    "text": "{text}",
                    "notifyUrl": "{receipt_url}",
                    "notifyContentType": "application/json",
                }
            ]
        },
        "generic": {"to": "{phone}", "message": "{text}"},
    }[profile]
    return {
        "name": profile,
        "type": "http",
        "profile": profile,
        "url": f"{gw.url}/{profile}",
        "encoding": "json" if profile in ("infobip", "generic") else "form",
        "fields": fields,
        "retry": FAST_RETRY,
        "rate_per_second": 200,
        **extra,
    }


@asynccontextmanager
async def served_notify(
    settings: Settings, tmp_path: Path, channels: list[dict[str, Any]], **config: Any
) -> AsyncIterator[tuple[RunningService, str]]:
    """notify on a real loopback port (gateways call it back); its public URL is that port."""
    sock = listening_socket()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    path = tmp_path / "notify.yaml"
    path.write_text(yaml.safe_dump({"channels": channels, **config}))
    tuned = settings.model_copy(update={"notify_config": path, "public_url": base})
    async with running("notify", tuned) as svc, serve_app(svc.app, sock) as url:
        yield svc, url


async def stream_events(settings: Settings, subject: str) -> list[dict[str, Any]]:
    async with nats_client(settings) as client:
        js = client.jetstream()
        info = await js.stream_info(STREAM)
        found = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                msg = await js.get_msg(STREAM, seq)
            except Exception:
                continue
            if msg.subject == subject:
                found.append(json.loads(msg.data or b"{}"))
        return found


async def issue(settings: Settings, **kw: Any) -> Any:
    req = request(**kw)
    issued, _, _ = ticket_events(req)
    await publish(settings, req)
    await publish(settings, issued)
    return issued


async def delivery_in_template(
    svc: RunningService, ticket_id: str, template: str, status: str
) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        found = await deliveries(svc, ticket_id=ticket_id)
        return next((d for d in found if d["template"] == template and d["status"] == status), None)

    found: dict[str, Any] = await eventually(reached)
    return found


# --- body-level refusals -----------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["fonnte", "zenziva", "infobip"])
async def test_a_refusal_in_a_200_body_is_recorded_as_refused(
    settings: Settings, tmp_path: Path, profile: str
) -> None:
    async with (
        FakeGateway() as gw,
        served_notify(settings, tmp_path, [gateway(gw, profile)]) as (
            svc,
            _,
        ),
    ):
        gw.respond_as(profile)
        gw.refuse_in_body("nomor {to} tidak terdaftar")
        issued = await issue(settings)

        delivery = await delivery_in(svc, issued.data.ticket_id, "failed")
        assert [r.status for r in gw.received] == [200]  # HTTP said yes; the body said no
        assert delivery["refused"] is True and delivery["attempts"] == 1
        assert delivery["last_error"].startswith("refused:")
        assert not leaks(delivery["last_error"])
        summary = (await svc.http.get("/api/v1/deliveries/summary", params={"site": SITE})).json()
        (channel,) = summary["channels"]
        assert (channel["sent"], channel["failed"], channel["refused"]) == (0, 1, 1)
        failed = await eventually(
            lambda: stream_events(settings, f"giliran.{SITE}.notification.failed")
        )
        assert failed[0]["data"]["refused"] is True


async def test_a_generic_gateway_is_judged_by_its_configured_body_rule(
    settings: Settings, tmp_path: Path
) -> None:
    rule = {"field": "status", "values": ["true"], "reason_field": "error", "id_field": "id"}
    async with (
        FakeGateway() as gw,
        served_notify(settings, tmp_path, [gateway(gw, "generic", accept=rule)]) as (svc, _),
    ):
        first = await issue(settings)
        sent = await delivery_in(svc, first.data.ticket_id, "sent")
        assert sent["receipt"] is None
        gw.refuse_in_body("kuota habis")
        second = await issue(settings)
        refused = await delivery_in(svc, second.data.ticket_id, "failed")
        assert refused["refused"] and "kuota habis" in refused["last_error"]


# --- delivery reports --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("profile", "outcome"), [("fonnte", "delivered"), ("infobip", "undelivered")]
)
async def test_a_delivery_report_settles_an_accepted_message_once(
    settings: Settings, tmp_path: Path, profile: str, outcome: str
) -> None:
    async with FakeGateway() as gw:
        channel = gateway(gw, profile, receipt_secret=SECRET)
        async with served_notify(settings, tmp_path, [channel]) as (svc, base):
            gw.respond_as(profile)
            issued = await issue(settings)
            sent = await delivery_in(svc, issued.data.ticket_id, "sent")
            (message,) = gw.messages()
            url = f"{base}/receipts/{profile}/{SITE}?key={receipt_key(SECRET, profile, SITE)}"
            if profile == "infobip":
                assert message.json["messages"][0]["notifyUrl"] == url  # our keyed URL

            # An intermediate state first (Fonnte: sent to WhatsApp; Infobip: pending).
            first = await gw.report(message, "pending", url=url)
            assert first.status_code == 200 and first.json()["pending"] == 1
            answer = await gw.report(message, outcome, url=url)
            assert answer.status_code == 200 and answer.json()["recorded"] == 1
            replay = await gw.report(message, outcome, url=url)
            assert replay.json() == {"recorded": 0, "repeated": 1, "pending": 0, "unknown": 0}

            (after,) = await deliveries(svc, ticket_id=issued.data.ticket_id)
            assert (after["status"], after["receipt"]) == ("sent", outcome)
            assert after["delivery_id"] == sent["delivery_id"]
            summary = (
                await svc.http.get("/api/v1/deliveries/summary", params={"site": SITE})
            ).json()["channels"][0]
            assert (summary["sent"], summary[outcome]) == (1, 1)
            page = (await svc.http.get("/operator", params={"site": SITE})).text
            assert "Sampai / Delivered" in page

            async def one_receipt() -> list[dict[str, Any]] | None:
                found = await stream_events(settings, f"giliran.{SITE}.notification.receipt")
                return found or None

            (event,) = await eventually(one_receipt)
            assert event["data"]["outcome"] == outcome
            assert event["data"]["delivery_id"] == sent["delivery_id"]


def good_url(base: str) -> str:
    return f"{base}/receipts/fonnte/{SITE}?key={receipt_key(SECRET, 'fonnte', SITE)}"


async def test_delivery_reports_refuse_forgery_other_sites_and_floods(
    settings: Settings, tmp_path: Path
) -> None:
    async with FakeGateway() as gw:
        channel = gateway(gw, "fonnte", receipt_secret=SECRET)
        async with served_notify(settings, tmp_path, [channel], receipts_per_minute=12) as (
            svc,
            base,
        ):
            gw.respond_as("fonnte")
            issued = await issue(settings)
            await delivery_in(svc, issued.data.ticket_id, "sent")
            (message,) = gw.messages()
            ours = f"{base}/receipts/fonnte/{SITE}"
            theirs = f"{base}/receipts/fonnte/{OTHER_SITE}"

            # 1 forged: no key, a wrong key, another site's key on our path.
            assert (await gw.report(message, url=ours)).status_code == 401
            assert (await gw.report(message, url=f"{ours}?key={'0' * 32}")).status_code == 401
            other_key = receipt_key(SECRET, "fonnte", OTHER_SITE)
            assert (await gw.report(message, url=f"{ours}?key={other_key}")).status_code == 401
            # 2 a genuine key of another site (a fair laptop's) cannot settle our message.
            answer = await gw.report(message, url=f"{theirs}?key={other_key}")
            assert answer.status_code == 200 and answer.json()["unknown"] == 1
            # 3 a report naming an id that is not ours changes nothing.
            good = good_url(base)
            stranger = await gw.report(
                type(message)(**{**message.__dict__, "message_id": "999999"}), url=good
            )
            assert stranger.json()["unknown"] == 1
            (untouched,) = await deliveries(svc, ticket_id=issued.data.ticket_id)
            assert untouched["receipt"] is None
            # 4 a channel that takes no reports; an unreadable body (bilingual 400).
            assert (await gw.report(message, url=f"{base}/receipts/nope/{SITE}")).status_code == 404
            async with httpx.AsyncClient() as client:
                unreadable = await client.post(good_url(base), content=b"status=sent")
                assert unreadable.status_code == 400
                assert unreadable.json()["error"]["message_id"].startswith("Laporan pengiriman")
            # 5 a flood from one address: 12 a minute, then 429 whatever the key (36 reports
            # span at most two minute windows, so one of them overflows).
            codes = [(await gw.report(message, url=good)).status_code for _ in range(30)]
            assert codes[0] == 200 and 429 in codes and set(codes) == {200, 429}
            (after,) = await deliveries(svc, ticket_id=issued.data.ticket_id)
            assert after["receipt"] == "delivered"  # the genuine report counted, once
            receipts = await stream_events(settings, f"giliran.{SITE}.notification.receipt")
            assert len(receipts) == 1


# --- WhatsApp Business Platform (Cloud API) ---------------------------------------------------

VERIFY_TOKEN = "verify-token-0123456789"


def cloud_channel(wa: FakeWhatsAppCloud) -> dict[str, Any]:
    return {
        "name": "wa-cloud",
        "type": "whatsapp_cloud",
        "api_url": wa.api_url,
        "phone_number_id": wa.phone_number_id,
        "access_token": wa.access_token,
        "app_secret": wa.app_secret,
        "verify_token": VERIFY_TOKEN,
        "templates": {
            "ticket_issued": {
                "name": "giliran_nomor_antrean",
                "parameters": ["number", "service", "cost", "status_url"],
            },
            "ticket_called": {"name": "giliran_dipanggil", "parameters": ["number", "counter"]},
        },
        "retry": FAST_RETRY,
    }


async def test_whatsapp_cloud_sends_templates_and_takes_signed_statuses(
    settings: Settings, tmp_path: Path
) -> None:
    templates = {"giliran_nomor_antrean": 4, "giliran_dipanggil": 2}
    async with (
        FakeWhatsAppCloud(templates=templates) as wa,
        served_notify(settings, tmp_path, [cloud_channel(wa)]) as (svc, base),
    ):
        hook = f"{base}/receipts/wa-cloud/{SITE}"
        # Meta's subscription handshake: only the holder of the verify token.
        ok = await wa.verify(hook, VERIFY_TOKEN, "1158201444")
        assert (ok.status_code, ok.text) == (200, "1158201444")
        assert (await wa.verify(hook, "guessed-token-0000000", "x")).status_code == 401

        req = request()
        issued, called, completed = ticket_events(req)
        await publish(settings, req)
        await publish(settings, issued)
        sent = await delivery_in(svc, issued.data.ticket_id, "sent")
        (msg,) = wa.accepted()
        template = msg.json["template"]
        assert msg.json["type"] == "template" and msg.json["to"] == PHONE.lstrip("+")
        assert template["name"] == "giliran_nomor_antrean"
        assert template["language"] == {"code": "id"}
        values = [p["text"] for p in template["components"][0]["parameters"]]
        assert values[:3] == ["K-001", "KIA", "Layanan ini GRATIS."]

        # Forged: wrong secret; a body changed after signing; another business number.
        wamid = str(msg.message_id)
        forged = await wa.send_status(hook, wamid, "delivered", secret="not-the-app-secret!")
        assert forged.status_code == 401
        signed = json.dumps(wa.status_body(wamid, "delivered")).encode()
        tampered = signed.replace(b"delivered", b"failed")
        async with httpx.AsyncClient() as client:
            altered = await client.post(
                hook,
                content=tampered,
                headers={
                    "X-Hub-Signature-256": wa.sign(signed),
                    "Content-Type": "application/json",
                },
            )
        assert altered.status_code == 401
        elsewhere = await wa.send_status(hook, wamid, "failed", phone_number_id="999999999")
        assert elsewhere.json()["unknown"] == 1
        # Genuine: sent (intermediate), delivered, then read and a replay change nothing.
        assert (await wa.send_status(hook, wamid, "sent")).json()["pending"] == 1
        assert (await wa.send_status(hook, wamid, "delivered")).json()["recorded"] == 1
        assert (await wa.send_status(hook, wamid, "read")).json()["repeated"] == 1
        assert (await wa.send_status(hook, wamid, "delivered")).json()["repeated"] == 1
        (after,) = await deliveries(svc, ticket_id=issued.data.ticket_id)
        assert (after["receipt"], after["delivery_id"]) == ("delivered", sent["delivery_id"])

        await publish(settings, called)
        await delivery_in_template(svc, issued.data.ticket_id, "ticket_called", "sent")
        # No approved template for "completed": WhatsApp would refuse free text, so no
        # delivery at all. (The next citizen's message is handled after it, in order.)
        await publish(settings, completed)
        later = await issue(settings)
        await delivery_in(svc, later.data.ticket_id, "sent")
        found = await deliveries(svc, ticket_id=issued.data.ticket_id)
        assert [d["template"] for d in found] == ["ticket_issued", "ticket_called"]


async def test_whatsapp_cloud_failures_are_judged_as_meta_documents_them(
    settings: Settings, tmp_path: Path
) -> None:
    # The approved template takes 3 parameters, not the 4 configured: Meta refuses (132000).
    templates = {"giliran_nomor_antrean": 3, "giliran_dipanggil": 2}
    async with (
        FakeWhatsAppCloud(templates=templates, blocked={PHONE.lstrip("+")}) as wa,
        served_notify(settings, tmp_path, [cloud_channel(wa)]) as (svc, base),
    ):
        wa.throttle(1)  # first a rate limit (130429): retried
        issued = await issue(settings)
        refused = await delivery_in(svc, issued.data.ticket_id, "failed")
        assert [r.status for r in wa.received] == [400, 400]
        assert refused["refused"] and "132000" in refused["last_error"]

        wa.templates["giliran_nomor_antrean"] = 4
        blocked = await issue(settings)
        refusal = await delivery_in(svc, blocked.data.ticket_id, "failed")
        assert "131030" in refusal["last_error"] and not leaks(refusal["last_error"])
        assert "+6281******890" in refusal["last_error"]

        # A failed status from Meta after acceptance: undelivered, its reason masked.
        wa.blocked.clear()
        third = await issue(settings)
        await delivery_in(svc, third.data.ticket_id, "sent")
        wamid = str(wa.accepted()[-1].message_id)
        # One Meta app has one callback URL for every site this notify serves: its signature
        # vouches for all of them, so the report counts whichever site's path it came to.
        hook = f"{base}/receipts/wa-cloud/{OTHER_SITE}"
        assert (await wa.send_status(hook, wamid, "failed")).json()["recorded"] == 1
        (after,) = await deliveries(svc, ticket_id=third.data.ticket_id)
        assert after["receipt"] == "undelivered"
        assert after["receipt_reason"].startswith("131026") and not leaks(after["receipt_reason"])


# --- reporting: delivered against accepted -----------------------------------------------------


async def test_reporting_counts_delivered_and_refused_against_accepted(settings: Settings) -> None:
    now = utcnow()
    facts = {
        "cause_type": "giliran.ticket.issued.v1",
        "channel": "sms",
        "template": "ticket_issued",
    }

    def sent(n: int) -> Any:
        data = NotificationSent(
            **facts, delivery_id=f"d{n}", cause_event_id=f"e{n}", cost_units=1, sent_at=now
        )
        return new_event(data, site=SITE, source="notify")

    receipts = [
        new_event(
            NotificationReceipt(
                **facts, delivery_id=f"d{n}", cause_event_id=f"e{n}", outcome=outcome,
                reported_at=now + timedelta(seconds=5),
            ),
            site=SITE, source="notify",
        )
        for n, outcome in ((1, DeliveryOutcome.DELIVERED), (2, DeliveryOutcome.UNDELIVERED))
    ]  # fmt: skip
    refused = new_event(
        NotificationFailed(
            **facts, delivery_id="d9", cause_event_id="e9", reason="refused: x", failed_at=now,
            refused=True,
        ),
        site=SITE, source="notify",
    )  # fmt: skip
    day = f"{now.astimezone(ZoneInfo('Asia/Jakarta')):%Y-%m-%d}"
    async with running("reporting", settings) as reporting:
        # A report may overtake its message's "sent": both orders end the same.
        for event in [receipts[0], sent(1), sent(2), sent(3), receipts[1], refused]:
            await publish(settings, event)

        async def counted() -> dict[str, Any] | None:
            r = await reporting.http.get(f"/api/v1/sites/{SITE}/summary", params={"date": day})
            sms = r.json()["notifications"].get("sms")
            return sms if sms and sms["sent"] == 3 and sms["failed"] == 1 else None

        sms = await eventually(counted)
        assert sms == {
            "sent": 3, "delivered": 1, "undelivered": 1, "failed": 1, "refused": 1,
            "cost_units": 3,
        }  # fmt: skip
        page = await reporting.http.get("/reports/daily", params={"site": SITE, "date": day})
        assert "Sampai / Delivered" in page.text and 'id="notifications"' in page.text
