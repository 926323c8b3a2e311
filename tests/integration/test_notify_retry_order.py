"""A delivery's events leave in their order (ADR 0182): a `notification.failed` still pending in
the delivery's outbox (NATS was away when it failed) goes out before the `notification.sent` of
the operator's retry, although the retry hands only its own event over. Real embedded store."""

from __future__ import annotations

from datetime import timedelta

import pytest

from giliran.contracts import NotificationFailed, NotificationSent, new_event, utcnow
from giliran.settings import Settings
from giliran.store import OUTBOX, OUTBOX_COUNT, Document, OutboxRelay, connect, outbox_fields
from services.notify.domain import DeliveryStatus
from services.notify.store import DeliveryStore

pytestmark = pytest.mark.integration
SITE = "cikarang-utara"
FACTS = {
    "delivery_id": "d1", "cause_event_id": "c1", "cause_type": "giliran.ticket.issued.v1",
    "request_id": "r1", "ticket_id": "r1-KIA", "channel": "sms", "template": "ticket_issued",
}  # fmt: skip


async def test_the_retrys_sent_follows_the_pending_failed(settings: Settings) -> None:
    client = connect(settings.mongo_url)
    db_name = f"{settings.db_prefix}_notifyorder"
    store = DeliveryStore(client[db_name])
    published: list[str] = []

    async def publish(event: Document) -> None:
        published.append(str(event["type"]))

    relay = OutboxRelay([store.deliveries], publish)
    try:
        failed_at = utcnow()
        failed = new_event(
            NotificationFailed(**FACTS, reason="HTTP 500", failed_at=failed_at),
            site=SITE,
            source="notify",
            at=failed_at,
        )
        # Failed while NATS was away: the event is still in the delivery's outbox.
        await store.deliveries.insert_one(
            {"_id": "d1", "status": DeliveryStatus.FAILED.value, **outbox_fields([failed])}
        )
        # The operator's retry: sending again, then sent, with its event.
        assert await store.finish(
            "d1", DeliveryStatus.SENDING, {"attempts": 0}, from_statuses=(DeliveryStatus.FAILED,)
        )
        sent_at = failed_at + timedelta(seconds=5)
        sent = new_event(
            NotificationSent(**FACTS, cost_units=1, sent_at=sent_at),
            site=SITE,
            source="notify",
            at=sent_at,
        )
        outbox = await store.finish_announcing("d1", DeliveryStatus.SENT, {}, [sent])
        assert outbox is not None and set(outbox) == {failed.id, sent.id}
        assert await relay.relay_now(store.deliveries, "d1", [sent], outbox=outbox)
        assert published == ["giliran.notification.failed.v1", "giliran.notification.sent.v1"]
        doc = await store.deliveries.find_one({"_id": "d1"})
        assert doc is not None and doc[OUTBOX_COUNT] == 0 and not doc[OUTBOX]

        # No longer being sent (a stale drop won, or another instance finished it): nothing
        # is written and nothing is announced.
        late = new_event(
            NotificationSent(**FACTS, cost_units=1, sent_at=sent_at), site=SITE, source="notify"
        )
        assert await store.finish_announcing("d1", DeliveryStatus.SENT, {}, [late]) is None
        doc = await store.deliveries.find_one({"_id": "d1"})
        assert doc is not None and late.id not in doc[OUTBOX]
    finally:
        await relay.stop()
        await client.drop_database(db_name)
        await client.close()
