"""Reporting's IKM from feedback.submitted events, checked against the regulation's formula
computed independently in the test."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from giliran.contracts import FeedbackSubmitted, TicketCompleted, new_event, new_id
from giliran.settings import Settings
from services.reporting.ikm import ELEMENTS
from tests.conftest import eventually, publish, running

pytestmark = pytest.mark.integration

SUNDAY = datetime(2026, 11, 29, 3, 0, tzinfo=UTC)  # 10:00 WIB


def feedback(scores: dict[str, int], at: datetime = SUNDAY) -> object:
    return new_event(
        FeedbackSubmitted(
            feedback_id=new_id(),
            request_id=new_id(),
            session_id="cikarang-utara-20261129",
            service="KTP-CETAK",
            scores=scores,
            submitted_at=at,
        ),
        site="cikarang-utara",
    )


def completed(n: int) -> object:
    return new_event(
        TicketCompleted(
            ticket_id=f"t{n}", request_id=f"r{n}", session_id="cikarang-utara-20261129",
            service="KTP-CETAK", number=f"B-{n:03d}", issued_at=SUNDAY, counter="1",
            called_at=SUNDAY + timedelta(minutes=5), completed_at=SUNDAY + timedelta(minutes=15),
        ),
        site="cikarang-utara",
    )  # fmt: skip


async def test_ikm_of_a_sunday_matches_the_formula(settings: Settings) -> None:
    rng = random.Random(27)
    answers = [{e: rng.choice([2, 3, 3, 4, 4]) for e in ELEMENTS} for _ in range(60)]
    async with running("reporting", settings) as svc:
        for n in range(1, 71):
            await publish(settings, completed(n))
        events = [feedback(a) for a in answers]
        for event in events:
            await publish(settings, event)
        await publish(settings, events[0], msg_id=uuid.uuid4().hex)  # delivered twice
        await publish(settings, feedback(answers[0], at=SUNDAY + timedelta(days=1)))  # Monday

        async def report() -> dict[str, object] | None:
            r = await svc.http.get(
                "/api/v1/sites/cikarang-utara/satisfaction",
                params={"from": "2026-11-29", "to": "2026-11-29"},
            )
            body: dict[str, object] = r.json()
            return body if body["responses"] == 60 and body["served"] == 70 else None

        body = await eventually(report, within=20)

    # The regulation's formula, computed here without the service's code.
    nrr = {e: sum(a[e] for a in answers) / len(answers) for e in ELEMENTS}
    expected = round(25 * sum(v * (1 / 9) for v in nrr.values()) + 1e-9, 2)
    assert body["ikm"] == expected
    letter = "A" if expected >= 88.31 else "B" if expected >= 76.61 else "C"
    assert body["grade"]["letter"] == letter  # type: ignore[index]
    elements = body["elements"]
    assert isinstance(elements, list)
    assert [round(e["nrr"], 4) for e in elements] == [round(nrr[e], 4) for e in ELEMENTS]
    assert (body["required_sample"], body["meets_sample"]) == (59, True)  # Krejcie & Morgan, N=70
