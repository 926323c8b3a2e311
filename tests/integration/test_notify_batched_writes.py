"""A fetched batch's writes in one command each (ADR 0219-0221), against the real embedded store,
a real HTTP gateway and notify's own batch handler: one ticket write and one log insert for a
batch's first handlings, each statement's outcome known (moved, a repeat, another site's ticket,
a purged contact), a forged event in the batch refused, and duplicates — in one batch or racing
into two instances' batches — sent once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pymongo.errors import WriteError

from giliran.contracts import TicketCompleted, TicketIssued, TicketStatus, new_event, utcnow
from giliran.contracts.envelope import new_id
from giliran.errors import Unprocessable
from giliran.settings import Settings
from giliran.store import STORE_COMMANDS, connect, instant
from services.notify.batching import GroupCommit
from services.notify.domain import Claim
from services.notify.handlers import ChannelWorker
from services.notify.store import (
    Advance,
    DeliveryStore,
    Filing,
    ForeignTicket,
    NotRequestsTicket,
)
from services.notify.subscribers import BatchIncomplete, EachOnce
from tests.conftest import eventually, publish, running
from tests.fakes.gateway import FakeGateway
from tests.integration.test_notify_channels import (
    SITE,
    deliveries,
    notify_with,
    request,
    sms_channel,
    ticket_events,
)
from tests.integration.test_notify_instances import sent_events, sms_worker

pytestmark = pytest.mark.integration
OTHER_SITE = "another-site"


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[DeliveryStore]:
    """Notify's store on a database of its own, dropped after the test."""
    client = connect(settings.mongo_url)
    name = f"{settings.db_prefix}_deliveries_{new_id()}"
    try:
        yield DeliveryStore(client[name])
    finally:
        await client.drop_database(name)
        await client.close()


def batch_of(worker: ChannelWorker, window: float = 5.0) -> EachOnce:
    """The sms consumer's batch handler, as `subscribers.register` builds it; by default its
    writes wait for every flow of the batch (the 20 ms window is `test_notify_group_commit`'s:
    a loaded machine can spread five HTTP answers wider than that)."""
    handlers = dict.fromkeys({type(e.data) for e in ticket_events(request())}, worker.on_ticket)
    return EachOnce(handlers, window=window)


async def together(*calls: Any) -> list[Any]:
    """Each call as one flow of one fetched batch (as `EachOnce` runs a batch's requests)."""
    commit = GroupCommit(flows=len(calls))

    async def flow(call: Any) -> Any:
        with commit.flow():
            return await call

    return list(await asyncio.gather(*(flow(c) for c in calls)))


def claim(key: str) -> Claim:
    now = utcnow()
    return Claim(
        delivery_id=key, held_until=now + timedelta(seconds=30), attempts=1, claimed_at=now
    )


async def test_each_statement_of_a_batchs_ticket_write_has_its_own_outcome(
    store: DeliveryStore,
) -> None:
    """One `update` with an upsert per ticket: a new ticket and one moved forward are moved
    (True); one already further along and another site's ticket are not (False), and neither
    is written — the refusal of a forged event starts from this False (ADR 0198)."""
    fields = {"site": SITE, "session_id": "s", "service": "KIA", "request_id": "r"}
    await store.tickets.insert_many([
        {"_id": "r-MOVES", **fields, "status": "waiting", "rank": TicketStatus.WAITING.rank},
        {"_id": "r-FURTHER", **fields, "status": "completed",
         "rank": TicketStatus.COMPLETED.rank},
        {"_id": "r-FOREIGN", **fields, "site": OTHER_SITE, "status": "waiting",
         "rank": TicketStatus.WAITING.rank},
    ])  # fmt: skip
    before = dict(STORE_COMMANDS.counts)
    outcomes = await store.advance_many([
        Advance("r-NEW", fields, TicketStatus.WAITING, claim("a")),
        Advance("r-MOVES", fields, TicketStatus.CALLED, claim("b")),
        Advance("r-FURTHER", fields, TicketStatus.CALLED, claim("c")),
        Advance("r-FOREIGN", fields, TicketStatus.CALLED, claim("d")),
    ])  # fmt: skip
    spent = {k: v - before.get(k, 0) for k, v in STORE_COMMANDS.counts.items()}
    assert outcomes == [True, True, False, False]
    assert {k: v for k, v in spent.items() if v and k[1] == "tickets"} == {("update", "tickets"): 1}
    foreign = await store.tickets.find_one({"_id": "r-FOREIGN"})
    assert foreign is not None and foreign["status"] == "waiting" and "claims" not in foreign
    further = await store.tickets.find_one({"_id": "r-FURTHER"})
    assert further is not None and further["status"] == "completed"
    moved = await store.notices("r-MOVES")
    assert moved is not None and moved.status is TicketStatus.CALLED and moved.claim("b")


async def test_each_filing_of_a_batchs_contact_write_has_its_own_outcome(
    store: DeliveryStore,
) -> None:
    """The contact book's filings of one batch in one `update`: a new contact, the same event
    again (a repeat) and a purged record (stays purged: nothing personal comes back) each told
    apart; the requests' filings likewise (new, repeat, filed after its contact)."""
    await store.contacts.insert_many([
        {"_id": "again", "contact_event": "e-again", "phone": "+62811", "purged": False},
        {"_id": "purged", "purged": True, "phone": None},
        {"_id": "contact-first", "contact_event": "e-cf", "phone": "+62812",
         "purged": False},
    ])  # fmt: skip
    phone = {"phone": "+62813", "contact_seen": True}
    before = dict(STORE_COMMANDS.counts)
    learnt = await together(
        store.learn_contact("new", phone, {"site": SITE}, "e-new"),
        store.learn_contact("again", phone, {"site": SITE}, "e-again"),
        store.learn_contact("purged", phone, {"site": SITE}, "e-purged"),
    )
    spent = {k: v - before.get(k, 0) for k, v in STORE_COMMANDS.counts.items()}
    # One command for the three; the two that met their record are then told apart alone.
    assert spent.get(("update", "contacts")) == 1 + 2, spent
    assert learnt == [Filing.NEW, Filing.REPEAT, Filing.PURGED]
    purged = await store.contacts.find_one({"_id": "purged"})
    assert purged is not None and purged["phone"] is None
    again = await store.contacts.find_one({"_id": "again"})
    assert again is not None and again["phone"] == "+62811"

    filed = await together(
        store.save_contact("req-new", {"site": SITE}, "r-new"),
        store.save_contact("new", {"site": SITE}, "r-x"),  # filed by its contact first
        store.save_contact("req-new2", {"site": SITE}, "r-new2"),
    )
    assert filed == [False, False, False]
    again_filed = await together(
        store.save_contact("req-new", {"site": SITE}, "r-new"),
        store.save_contact("req-other", {"site": SITE}, "r-other"),
    )
    assert again_filed == [True, False]
    first = await store.contacts.find_one({"_id": "new"})
    assert first is not None and first["request_event"] == "r-x"
    assert first["phone"] == "+62813"


async def test_a_batch_of_first_handlings_is_one_ticket_write_and_one_log_insert(
    settings: Settings, tmp_path: Path
) -> None:
    """Five requests' `ticket.issued` in one fetched batch: one `update tickets` and one `insert
    deliveries` for all five, each message sent once. A forged `ticket.completed` of another site
    naming one of them, in the same batch, is refused: nothing moved, nobody told. The whole batch
    again (a redelivery) sends nothing."""
    async with FakeGateway() as gw, notify_with(settings, tmp_path, [sms_channel(gw)]) as svc:
        worker = sms_worker(svc)
        requests = [request() for _ in range(5)]
        for req in requests:
            await publish(settings, req)
        for req in requests:

            async def known(request_id: str = req.data.request_id) -> bool:
                try:
                    return await worker.contacts.contact(request_id) is not None
                except Exception:
                    return False

            await eventually(known)
        issued = [ticket_events(req)[0] for req in requests]
        victim = ticket_events(requests[0])[2]
        forged = new_event(TicketCompleted(**victim.data.model_dump()), site=OTHER_SITE)
        each = batch_of(worker)
        before = dict(STORE_COMMANDS.counts)
        with pytest.raises(BatchIncomplete):
            await each([*issued, forged])
        spent = {k: v - before.get(k, 0) for k, v in STORE_COMMANDS.counts.items()}
        # The first handlings: one ticket write, one log insert; the forged event none (its
        # request is of another site: refused before any write). The relay's poll only reads.
        writes = {k: v for k, v in spent.items() if v and k[0] != "find"}
        assert writes == {("update", "tickets"): 1, ("insert", "deliveries"): 1}, spent
        with pytest.raises(ForeignTicket):
            await each([forged])  # the kernel's one-by-one pass: its outcome, not again
        assert gw.count("/sms") == 5 and gw.duplicates("/sms") == 0
        ticket = await svc.app.state.notify_store.notices(victim.data.ticket_id)
        assert ticket.status is TicketStatus.WAITING and ticket.site == SITE
        for event in issued:
            (delivery,) = await deliveries(svc, ticket_id=event.data.ticket_id)
            assert delivery["status"] == "sent" and delivery["attempts"] == 1
        # Redelivered, all of it at once: every one a repeat, nothing sent again.
        assert await batch_of(worker)(issued) == {e.id for e in issued}
        assert gw.count("/sms") == 5


async def test_a_batch_racing_into_two_instances_sends_each_message_once(
    settings: Settings, tmp_path: Path
) -> None:
    """The same fetched batch, with each event twice in it, handled by two instances' batch
    handlers at the same moment (the ack wait ran out on the first): each message sent once,
    logged once, one `notification.sent` each."""
    async with FakeGateway() as gw:
        config = tmp_path / "notify.yaml"
        config.write_text(yaml.safe_dump({"channels": [sms_channel(gw)]}))
        two = settings.model_copy(update={"notify_config": config})
        async with AsyncExitStack() as stack:
            instances = [await stack.enter_async_context(running("notify", two)) for _ in "ab"]
            requests = [request() for _ in range(4)]
            for req in requests:
                await publish(settings, req)
            await gw.wait_for(0)
            workers = [sms_worker(svc) for svc in instances]
            for worker in workers:
                for req in requests:

                    async def known(w: ChannelWorker = worker, r: str = req.data.request_id) -> Any:
                        try:
                            return await w.contacts.contact(r) is not None
                        except Exception:
                            return False

                    await eventually(known)
            issued = [ticket_events(req)[0] for req in requests]
            batch = [*issued, *issued]
            outcomes = await asyncio.gather(
                *(batch_of(w)(batch) for w in workers), return_exceptions=True
            )
            # Whichever instance lost a race waits for the other's hold (RetryLater) or calls
            # it a repeat; none sends a second time.
            assert all(isinstance(o, (set, BatchIncomplete)) for o in outcomes), outcomes
            assert gw.count("/sms") == 4 and gw.duplicates("/sms") == 0
            for event in issued:
                (delivery,) = await deliveries(instances[0], ticket_id=event.data.ticket_id)
                assert delivery["status"] == "sent" and delivery["attempts"] == 1

            async def four_sent() -> bool:
                return await sent_events(settings) == 4

            await eventually(four_sent)


async def test_calls_of_one_line_in_a_batch_share_one_read_of_it(store: DeliveryStore) -> None:
    """Two calls of one line reaching the line read together read it once; another line is
    read on its own; each gets its line's first tickets in call order."""
    now = utcnow()
    line = {"site": SITE, "session_id": "s", "status": "waiting", "rank": 0}
    await store.tickets.insert_many([
        {"_id": f"r{n}-{service}", **line, "service": service, "request_id": f"r{n}",
         "issued_at": instant(now + timedelta(seconds=n))}
        for service in ("KIA", "KTP") for n in (3, 1, 2)
    ])  # fmt: skip
    before = dict(STORE_COMMANDS.counts)
    kia, kia_again, ktp = await together(
        store.waiting_in_line(SITE, "s", "KIA", 2),
        store.waiting_in_line(SITE, "s", "KIA", 2),
        store.waiting_in_line(SITE, "s", "KTP", 3),
    )
    spent = {k: v - before.get(k, 0) for k, v in STORE_COMMANDS.counts.items()}
    assert spent.get(("find", "tickets")) == 2, spent
    assert [t.ticket_id for t in kia] == ["r1-KIA", "r2-KIA"]
    assert [t.ticket_id for t in kia_again] == ["r1-KIA", "r2-KIA"]
    assert [t.ticket_id for t in ktp] == ["r1-KTP", "r2-KTP", "r3-KTP"]


async def test_a_forged_ticket_event_cannot_take_a_ticket_id_notify_has_not_seen(
    settings: Settings, tmp_path: Path
) -> None:
    """Another site's publisher sends `ticket.issued` naming one of its own requests (so the
    request's site check passes) and the victim's ticket id, not seen yet, in the same fetched
    batch as the victim's real `ticket.issued`, and alone before it: refused before any write,
    with a reason that names only ids; the victim's ticket is its own site's and the victim is
    told, once."""
    async with FakeGateway() as gw, notify_with(settings, tmp_path, [sms_channel(gw)]) as svc:
        worker = sms_worker(svc)
        victim = request()
        forger = new_event(
            request().data.model_copy(update={"request_id": new_id()}), site=OTHER_SITE
        )
        for req in (victim, forger):
            await publish(settings, req)
        for req in (victim, forger):

            async def known(request_id: str = req.data.request_id) -> bool:
                try:
                    return await worker.contacts.contact(request_id) is not None
                except Exception:
                    return False

            await eventually(known)
        issued = ticket_events(victim)[0]
        forged = new_event(
            TicketIssued(**{**issued.data.model_dump(), "request_id": forger.data.request_id}),
            site=OTHER_SITE,
        )
        store = svc.app.state.notify_store
        # Alone first (the squat needs no batch): nothing written, nobody told.
        alone = batch_of(worker)
        with pytest.raises(BatchIncomplete):
            await alone([forged])
        with pytest.raises(NotRequestsTicket) as refused:
            await alone([forged])  # the kernel's pass: its outcome, the reason it is dead-lettered
        assert str(refused.value) == (
            f"ticket {issued.data.ticket_id} is not one of request {forger.data.request_id}"
        )
        assert await store.notices(issued.data.ticket_id) is None
        # Then in one batch with the real event, the forged one first.
        each = batch_of(worker)
        with pytest.raises(BatchIncomplete):
            await each([forged, issued])
        with pytest.raises(NotRequestsTicket):
            await each([forged])  # the kernel's one-by-one pass: dead-lettered
        assert await each([issued]) == set()  # handled in the batch: no error to settle
        ticket = await store.notices(issued.data.ticket_id)
        assert ticket is not None and ticket.site == SITE
        assert ticket.status is TicketStatus.WAITING
        (delivery,) = await deliveries(svc, ticket_id=issued.data.ticket_id)
        assert delivery["status"] == "sent" and delivery["request_id"] == victim.data.request_id
        assert gw.count("/sms") == 1 and gw.duplicates("/sms") == 0


async def test_a_statements_store_error_in_a_batch_is_retried_as_the_write_alone_is(
    store: DeliveryStore,
) -> None:
    """One statement of a batch's ticket write fails in the store for a reason other than a
    duplicate key (the embedded server reports any SQLite failure of a statement, e.g. "disk
    I/O error", as a write error: here a field the store cannot `$inc`). That writer gets the
    error pymongo raises for one failed write, which the bus retries with backoff, never
    `Unprocessable`, which it dead-letters at once; the other statements are written."""
    fields = {"site": SITE, "session_id": "s", "service": "KIA", "request_id": "r"}
    await store.tickets.insert_one(
        {"_id": "r-KIA", **fields, "status": "waiting", "rank": 0, "version": "x"}
    )
    failed, moved = await store.advance_many(
        [
            Advance("r-KIA", fields, TicketStatus.CALLED, claim("b")),
            Advance("r-GIZI", fields, TicketStatus.WAITING, claim("c")),
        ]
    )
    # pymongo's error for one failed write (what `update_one` raises alone): retried.
    assert isinstance(failed, WriteError) and not isinstance(failed, Unprocessable), failed
    assert failed.code != 11000  # not a duplicate key: no answer about the ticket
    assert moved is True
    assert (await store.notices("r-GIZI")) is not None
