"""Issue 14 finding 8: a gateway that echoes the destination number in its error reply must
leak it nowhere — logs, the delivery store, events, dead letters, the operator page and API."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from nats.js import JetStreamContext

from giliran.contracts.subjects import DLQ_STREAM, STREAM
from giliran.settings import Settings
from tests.conftest import eventually, nats_client, publish, running
from tests.fakes.gateway import FakeGateway
from tests.integration.test_notify_channels import (
    FAST_RETRY,
    SITE,
    delivery_in,
    notify_with,
    request,
    ticket_events,
)

pytestmark = pytest.mark.integration

# How gateways write the citizen's number (+6281234567890) back: nationally, internationally,
# grouped with spaces or dashes, digits only.
ECHOES = ("081234567890", "+62 812 3456 7890", "0812-3456-7890", "6281234567890")


def form_sms(gw: FakeGateway) -> dict[str, Any]:
    """A form-encoded SMS gateway at `gw`'s /sms, whose answers each test scripts."""
    return {
        "name": "sms",
        "type": "http",
        "medium": "sms",
        "url": f"{gw.url}/sms",
        "encoding": "form",
        "fields": {"to": "{phone_local}", "message": "{text}"},
        "retry": FAST_RETRY,
        "rate_per_second": 200,
    }


async def last_failed(js: JetStreamContext) -> bytes:
    """The last notification.failed on the stream, once the outbox has relayed it."""

    async def published() -> bytes | None:
        try:
            return (await js.get_last_msg(STREAM, f"giliran.{SITE}.notification.failed")).data
        except Exception:  # not relayed from the outbox yet
            return None

    found: bytes = await eventually(published)
    return found


def leaks(text: str) -> bool:
    """Whether `text` holds the citizen's full number in any writing (separators ignored)."""
    return "81234567890" in re.sub(r"[\s\-.()]", "", text)


async def test_a_gateway_that_echoes_the_number_leaks_it_nowhere(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Every Giliran logger at DEBUG, the rest as deployed (INFO: the store driver's DEBUG
    # command log would print every document, contacts included, whatever a gateway says).
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="giliran")
    echo = {"status": False, "error": "nomor tujuan " + " / ".join(ECHOES) + " ditolak"}
    async with FakeGateway() as gw:
        channel = form_sms(gw)
        # First busy (its words are kept as the last error), then a refusal, both echoing.
        gw.fail_next(1, status=503, path_prefix="/sms", body=echo)
        gw.reject(400, path_prefix="/sms", body=echo)
        async with notify_with(settings, tmp_path, [channel]) as svc:
            req = request()
            issued, _, _ = ticket_events(req)
            await publish(settings, req)
            await publish(settings, issued)
            delivery = await delivery_in(svc, issued.data.ticket_id, "failed")
            assert [r.status for r in gw.received] == [503, 400]
            assert "+6281******890" in delivery["last_error"]  # the operator still sees why

            store = svc.app.state.notify_store
            raw = await store.deliveries.find({}).to_list()
            page = (await svc.http.get("/operator", params={"site": SITE})).text
            api = (await svc.http.get("/api/v1/deliveries", params={"site": SITE})).text
            summary = (await svc.http.get("/api/v1/deliveries/summary", params={"site": SITE})).text
            async with nats_client(settings) as client:
                js = client.jetstream()

                async def parked() -> bool:
                    return (await js.stream_info(DLQ_STREAM)).state.messages >= 1

                await eventually(parked)
                dead = await js.get_last_msg(DLQ_STREAM, f"giliran.{SITE}.dlq.notify.ticket.issued")
                failed = [json.loads(await last_failed(js))]
            assert failed and "+6281******890" in failed[0]["data"]["reason"]

    places = {
        "log": caplog.text,
        "store": json.dumps(raw, default=str),
        "operator page": page,
        "deliveries api": api,
        "summary": summary,
        "events": json.dumps(failed),
        "dead letter": json.dumps(dict(dead.headers or {})),
    }
    assert {name: leaks(text) for name, text in places.items()} == dict.fromkeys(places, False)


async def test_a_gateway_called_with_the_number_in_its_url_does_not_put_it_in_the_log(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The classic GET style (`?nohp=0812...&pesan=...`): the URL holds the number and the
    message with its status link, and the HTTP client logs request URLs."""
    caplog.set_level(logging.INFO)
    async with FakeGateway(allow_get=True) as gw:
        channel = {
            "name": "sms",
            "type": "http",
            "url": f"{gw.url}/api/sendsms/",
            "method": "GET",
            "encoding": "query",
            "fields": {"userkey": "u", "nohp": "{phone_local}", "pesan": "{text}"},
            "retry": FAST_RETRY,
        }
        async with notify_with(settings, tmp_path, [channel]) as svc:
            req = request()
            issued, _, _ = ticket_events(req)
            await publish(settings, req)
            await publish(settings, issued)
            await delivery_in(svc, issued.data.ticket_id, "sent")
            (sent,) = await gw.wait_for(1)
            assert sent.query["nohp"] == "081234567890"  # it really was in the URL
    assert not leaks(caplog.text)


async def test_a_gateway_that_quotes_the_message_back_leaks_no_status_link(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A refusal that quotes the message it was sent quotes the citizen's status link, whose
    token opens the status page and checks the citizen in at a kiosk: the token must reach no
    log, stored error, operator view or notification.failed event."""
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="giliran")
    token = "Zq3_x-9a8B7c6D5e4F3g2H1i"
    base = "https://giliran.example"
    async with FakeGateway() as gw:
        channel = form_sms(gw)
        quoted = f"isi pesan ditolak: 'Cek status {base}/s/{token}'"
        gw.reject(400, path_prefix="/sms", body={"status": False, "error": quoted})
        path = tmp_path / "notify.yaml"
        path.write_text(yaml.safe_dump({"channels": [channel]}))
        tuned = settings.model_copy(update={"notify_config": path, "public_url": base})
        async with running("notify", tuned) as svc:
            req = request()
            citizen = req.data.citizen.model_copy(update={"status_token": token})
            req = req.model_copy(update={"data": req.data.model_copy(update={"citizen": citizen})})
            issued, _, _ = ticket_events(req)
            await publish(settings, req)
            await publish(settings, issued)
            delivery = await delivery_in(svc, issued.data.ticket_id, "failed")
            (sent,) = gw.received
            assert token in sent.form["message"]  # the message really carried the link
            assert "/s/…" in delivery["last_error"]  # the operator still sees what was said
            raw = await svc.app.state.notify_store.deliveries.find({}).to_list()
            api = (await svc.http.get("/api/v1/deliveries", params={"site": SITE})).text
            page = (await svc.http.get("/operator", params={"site": SITE})).text
            async with nats_client(settings) as client:
                failed = (await last_failed(client.jetstream())).decode()
    # The message itself is kept whole until the contact's purge: a retry sends it again.
    stored = json.dumps([{k: v for k, v in d.items() if k != "text"} for d in raw], default=str)
    places = {"log": caplog.text, "store": stored, "api": api, "page": page, "event": failed}
    assert {name: token in text for name, text in places.items()} == dict.fromkeys(places, False)
