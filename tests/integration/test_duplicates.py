"""At-least-once delivery: the same event delivered twice yields one ticket, message and count."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from giliran.bus import ensure_streams
from giliran.contracts.subjects import STREAM
from giliran.settings import Settings
from tests.conftest import eventually, nats_client, publish, request_event, running

pytestmark = pytest.mark.integration


async def test_same_event_twice_gives_one_of_everything(settings: Settings) -> None:
    async with (
        running("queue", settings) as queue,
        running("notify", settings) as notify,
        running("reporting", settings) as reporting,
        running("intake", settings),
    ):
        event = request_event(["KTP-CETAK"])
        # Two stream messages carrying the same event id (different Nats-Msg-Id, so JetStream's
        # own de-duplication does not hide the second one): the consumers must dedupe.
        await publish(settings, event, msg_id=f"{event.id}-a")
        await publish(settings, event, msg_id=f"{event.id}-b")
        async with nats_client(settings) as client:
            info = await client.jetstream().stream_info(STREAM)
            assert info.state.messages >= 2

        tickets = queue.app.state.queue.store.tickets

        async def issued() -> int:
            return await tickets.count_documents({"request_id": event.data.request_id})

        await eventually(issued)
        ticket_id = f"{event.data.request_id}-KTP-CETAK"

        # The issued event itself is then delivered twice as well.
        issued_event = await _stream_event(settings, "ticket.issued")
        await publish(settings, issued_event, msg_id=f"{issued_event['id']}-again")

        async def duplicates_seen() -> bool:
            """Each consumer has seen (and skipped) the second copy of each event it handles."""
            wanted = [
                (notify, "giliran.request.submitted.v1"),
                (notify, "giliran.ticket.issued.v1"),
                (reporting, "giliran.request.submitted.v1"),
                (reporting, "giliran.ticket.issued.v1"),
                (queue, "giliran.request.submitted.v1"),
            ]
            for service, kind in wanted:
                metrics = (await service.http.get("/metrics")).text
                if not _counted(metrics, kind, "duplicate"):
                    return False
            return True

        await eventually(duplicates_seen)
        assert await issued() == 1
        deliveries = (
            await notify.http.get("/api/v1/deliveries", params={"ticket_id": ticket_id})
        ).json()["deliveries"]
        assert [d["template"] for d in deliveries] == ["ticket_issued"]

        day = datetime.now(ZoneInfo("Asia/Jakarta")).date().isoformat()
        summary = (
            await reporting.http.get("/api/v1/sites/cikarang-utara/summary", params={"date": day})
        ).json()
        assert (summary["submitted"], summary["issued"]) == (1, 1)


async def test_jetstream_drops_a_republished_msg_id(settings: Settings) -> None:
    """The outbox relay may publish an event again after a crash: Nats-Msg-Id makes that a no-op."""
    event = request_event(["KIA"])
    await publish(settings, event)
    await publish(settings, event)
    async with nats_client(settings) as client:
        js = client.jetstream()
        await ensure_streams(js)
        assert (await js.stream_info(STREAM)).state.messages == 1


async def _stream_event(settings: Settings, kind: str) -> dict[str, object]:
    """The last event of a kind in the stream, once the outbox relay has published one."""
    import json

    from nats.js.errors import NotFoundError

    async with nats_client(settings) as client:
        js = client.jetstream()

        async def last() -> dict[str, object] | None:
            try:
                msg = await js.get_last_msg(STREAM, f"giliran.cikarang-utara.{kind}")
            except NotFoundError:
                return None
            data: dict[str, object] = json.loads(msg.data or b"{}")
            return data

        found: dict[str, object] = await eventually(last)
        return found


def _counted(metrics: str, kind: str, outcome: str) -> bool:
    for line in metrics.splitlines():
        if (
            line.startswith("giliran_events_handled_total{")
            and f'type="{kind}"' in line
            and f'outcome="{outcome}"' in line
            and float(line.rsplit(" ", 1)[1]) >= 1
        ):
            return True
    return False
