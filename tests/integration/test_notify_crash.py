"""kill -9 of the notify process mid-burst: after a restart every message reaches the gateway,
each delivery is recorded once, and re-sends are bounded by what was on the wire at the crash."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from giliran.contracts.subjects import STREAM
from giliran.errors import RetryLater
from giliran.settings import Settings
from giliran_ops.embedded import free_port
from tests.conftest import eventually, issue_token, nats_client, publish
from tests.fakes.gateway import FakeGateway
from tests.integration.test_notify_channels import (
    delivery_in,
    notify_with,
    request,
    sms_channel,
    ticket_events,
)

pytestmark = pytest.mark.integration

BURST = 300


async def start_notify(settings: Settings, config: Path, port: int) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "GILIRAN_NATS_URL": settings.nats_url,
        "GILIRAN_MONGO_URL": settings.mongo_url,
        "GILIRAN_DB_PREFIX": settings.db_prefix,
        "GILIRAN_NOTIFY_PORT": str(port),
        "GILIRAN_NOTIFY_CONFIG": str(config),
        "GILIRAN_LOG_LEVEL": "WARNING",
        "GILIRAN_SESSION_KEY": "test-session-key-0123456789abcdefghij",
        "GILIRAN_AUDIT_KEY": "test-audit-key-of-sufficient-length-0123",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "giliran_ops.cli", "service", "notify", env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    async with httpx.AsyncClient() as client:

        async def ready() -> bool:
            try:
                r = await client.get(f"http://127.0.0.1:{port}/readyz")
            except httpx.HTTPError:
                return False
            return r.status_code == 200

        await eventually(ready, within=30, interval=0.1)
    return process


async def each_recorded_once(settings: Settings, port: int, within: float) -> None:
    """Every message of the burst recorded as sent, and one `notification.sent` event each."""
    supervisor = await issue_token(settings, "supervisor", "cikarang-utara")
    auth = {"Authorization": f"Bearer {supervisor}"}
    async with httpx.AsyncClient(headers=auth) as client:

        async def all_recorded() -> bool:
            r = await client.get(
                f"http://127.0.0.1:{port}/api/v1/deliveries/summary",
                params={"site": "cikarang-utara"},
            )
            channels = r.json()["channels"]
            return bool(channels) and channels[0]["sent"] == BURST

        await eventually(all_recorded, within=within)
    async with nats_client(settings) as client:
        js = client.jetstream()

        async def one_sent_event_each() -> bool:
            info = await js.stream_info(STREAM, subjects_filter="giliran.*.notification.sent")
            subjects = info.state.subjects or {}
            return subjects.get("giliran.cikarang-utara.notification.sent") == BURST

        await eventually(one_sent_event_each, within=30)


async def test_kill_9_mid_burst_loses_nothing_and_records_each_delivery_once(
    settings: Settings, tmp_path: Path
) -> None:
    async with FakeGateway() as gw:
        config = tmp_path / "notify.yaml"
        config.write_text(yaml.safe_dump({"channels": [sms_channel(gw, rate_per_second=100)]}))
        port = free_port()
        notify = await start_notify(settings, config, port)
        try:
            req = request()
            await publish(settings, req)
            for n in range(1, BURST + 1):
                issued, _, _ = ticket_events(req, n)
                await publish(settings, issued)
            await gw.wait_for(BURST // 3, within=60)
            notify.send_signal(signal.SIGKILL)
            await notify.wait()
            at_crash = len(gw.accepted_refs())
            assert at_crash < BURST, "the crash must land mid-burst"

            notify = await start_notify(settings, config, port)
            await gw.wait_for(BURST, within=90)
            assert len(gw.accepted_refs()) == BURST  # every message arrived
            resent = gw.duplicates()
            print(f"\nkill -9 after {at_crash}/{BURST} messages; re-sent after restart: {resent}")
            # Only a send already on the wire when the process died can go twice (ADR 0005);
            # the gateway pacing (100/s) keeps that to a handful.
            assert resent <= 5

            await each_recorded_once(settings, port, within=30)
        finally:
            if notify.returncode is None:
                notify.send_signal(signal.SIGTERM)
                await notify.wait()


async def test_a_redelivery_while_the_gateway_still_has_the_message_does_not_send_it_twice(
    settings: Settings, tmp_path: Path
) -> None:
    """Two notify replicas share a consumer: when an attempt outlasts the ack wait (a slow
    gateway, a long queue at the rate limiter), NATS hands the same event to the other replica
    while the first still waits on the gateway. The second finds the delivery held and comes
    back later instead of sending the message again."""
    async with FakeGateway() as gw:
        gw.hang(60, n=1, path_prefix="/sms")
        channel = sms_channel(gw, timeout_seconds=60)
        async with notify_with(settings, tmp_path, [channel]) as svc:
            req = request()
            issued, _, _ = ticket_events(req)
            await publish(settings, req)
            await publish(settings, issued)

            async def on_the_wire() -> bool:  # received, not yet answered
                return gw.count("/sms") == 1

            await eventually(on_the_wire, within=20)

            # The same event, as the other replica receives it after the ack wait.
            worker = next(w for w in svc.app.state.workers if w.channel.name == "sms")
            came_back_later = None
            try:
                await worker.on_ticket(issued)
            except RetryLater as exc:
                came_back_later = exc.delay_seconds
            assert gw.count("/sms") == 1  # not sent a second time
            # The redelivery is not acked as done meanwhile: it comes back once the hold ends
            # (the gateway's 60 s timeout, a batch at 200/s, 10 s), not later.
            assert came_back_later is not None and 1.0 <= came_back_later <= 60 + 64 / 200 + 10

            gw.release()
            delivery = await delivery_in(svc, issued.data.ticket_id, "sent")
            assert delivery["attempts"] == 1
            # The redelivery coming back later finds it sent and sends nothing.
            await worker.on_ticket(issued)
            assert gw.count("/sms") == 1 and gw.duplicates("/sms") == 0


async def test_kill_9_while_a_batchs_messages_are_logged_together_resends_only_the_unlogged_few(
    settings: Settings, tmp_path: Path
) -> None:
    """ADR 0219: the messages of one fetched batch (one flow per request, run at once) are
    logged together, one insert for those answered within 20 ms of each other. A kill -9 then
    re-sends the messages on the wire and those answered but not yet logged — at the gateway's
    pace (100/s) a handful —, never loses one, and records each once with one
    `notification.sent` each. Here every ticket is its own request, so batches run many flows."""
    async with FakeGateway() as gw:
        config = tmp_path / "notify.yaml"
        config.write_text(yaml.safe_dump({"channels": [sms_channel(gw, rate_per_second=100)]}))
        port = free_port()
        notify = await start_notify(settings, config, port)
        try:
            requests = [request() for _ in range(BURST)]
            for req in requests:
                await publish(settings, req)
            for req in requests:
                issued, _, _ = ticket_events(req)
                await publish(settings, issued)
            await gw.wait_for(BURST // 3, within=60)
            notify.send_signal(signal.SIGKILL)
            await notify.wait()
            at_crash = len(gw.accepted_refs())
            assert at_crash < BURST, "the crash must land mid-burst"

            notify = await start_notify(settings, config, port)
            await gw.wait_for(BURST, within=120)
            assert len(gw.accepted_refs()) == BURST  # every message arrived
            resent = gw.duplicates()
            print(
                f"\nkill -9 after {at_crash}/{BURST} messages, one per request; re-sent: {resent}"
            )
            # On the wire, or answered and waiting for the batch's insert (20 ms at most, then
            # the insert's own round trip): at 100 messages/s, a handful.
            assert resent <= 10

            await each_recorded_once(settings, port, within=60)
        finally:
            if notify.returncode is None:
                notify.send_signal(signal.SIGTERM)
                await notify.wait()
