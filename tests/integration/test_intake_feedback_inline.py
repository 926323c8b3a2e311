"""Survey answers kept in their request (ADR 0177), against a real nats-server and the embedded
store: two instances answering the same ticket at once give one answer and one event; a request
stored before (answer in the old `feedback` collection, its event not yet published) keeps its
answer, refuses a second one, and its pending event is published after the upgrade."""

from __future__ import annotations

import asyncio

import pytest

from giliran.contracts import FeedbackSubmitted, new_event, utcnow
from giliran.settings import Settings
from giliran.store import instant, outbox_fields
from tests.conftest import eventually, publish_many, running
from tests.integration.test_intake_registration import SITE, bus_events
from tests.integration.test_intake_status import (  # noqa: F401 (fixture)
    SCORES,
    has_ticket,
    quick,
    registered,
    ticket_events,
)

pytestmark = pytest.mark.integration


async def test_two_instances_answering_one_ticket_at_once_record_one_answer(
    quick: Settings,  # noqa: F811
) -> None:
    async with (
        running("intake", quick) as one,
        running("intake", quick) as other,
        bus_events(quick, f"giliran.{SITE}.feedback.submitted") as published,
    ):
        request = await registered(one)
        await publish_many(quick, list(ticket_events(request)))
        await eventually(lambda: has_ticket(one, request["token"], "completed"))
        ticket_id = f"{request['request_id']}-KTP-CETAK"
        answer = {"token": request["token"], "ticket_id": ticket_id, "scores": SCORES}
        answers = await asyncio.gather(
            *(svc.http.post("/api/v1/feedback", json=answer) for svc in (one, other, one, other))
        )
        assert sorted(r.status_code for r in answers) == [201, 409, 409, 409]

        async def one_event() -> bool:
            return len(published) >= 1

        await eventually(one_event)
        await asyncio.sleep(0.5)
        # One event: both instances' relays may publish the same pending event (at-least-once;
        # JetStream drops the copy by its Nats-Msg-Id, ADR 0003), and this core subscription
        # sees every publish, so copies of the same id are not a second answer.
        assert len({event["id"] for event in published}) == 1, published
        view = (await other.http.get(f"/api/v1/status/{request['token']}")).json()
        assert view["tickets"][0]["survey_open"] is False


async def test_a_request_stored_before_keeps_its_answer_and_its_pending_event(
    quick: Settings,  # noqa: F811
) -> None:
    async with running("intake", quick) as svc:
        request = await registered(svc)
        await publish_many(quick, list(ticket_events(request)))
        await eventually(lambda: has_ticket(svc, request["token"], "completed"))
        store = svc.app.state.intake.store
        ticket_id = f"{request['request_id']}-KTP-CETAK"
        # As the code before stored it: no answers in the request, the answer in `feedback`
        # with its event still in that collection's outbox (intake stopped before the relay ran).
        await store.requests.update_one(
            {"_id": request["request_id"]}, {"$unset": {"feedback": ""}}
        )
        now = utcnow()
        event = new_event(
            FeedbackSubmitted(
                feedback_id=ticket_id,
                request_id=request["request_id"],
                session_id=request["session_id"],
                service="KTP-CETAK",
                scores=SCORES,
                submitted_at=now,
            ),
            site=SITE,
            source="intake",
            at=now,
        )
        await store.feedback.insert_one(
            {
                "_id": ticket_id,
                "request_id": request["request_id"],
                "session_id": request["session_id"],
                "service": "KTP-CETAK",
                "scores": SCORES,
                "submitted_at": instant(now),
                **outbox_fields([event]),
            }
        )
    async with (
        bus_events(quick, f"giliran.{SITE}.feedback.submitted") as published,
        running("intake", quick) as svc,
    ):

        async def out() -> bool:
            return any(e["id"] == event.id for e in published)

        await eventually(out)  # moved to the request's outbox at start, then published
        view = (await svc.http.get(f"/api/v1/status/{request['token']}")).json()
        assert view["tickets"][0]["survey_open"] is False
        again = await svc.http.post(
            "/api/v1/feedback",
            json={"token": request["token"], "ticket_id": ticket_id, "scores": SCORES},
        )
        assert again.status_code == 409, again.text
        await asyncio.sleep(0.3)
        assert [e["id"] for e in published] == [event.id]
