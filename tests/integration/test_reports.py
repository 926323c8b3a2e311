"""Exports, the kabupaten roll-up and the daily report carry the same numbers as the JSON API."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import pytest
from openpyxl import load_workbook

from giliran.contracts import FeedbackSubmitted, new_event, new_id
from giliran.settings import Settings
from services.reporting.ikm import ELEMENTS
from tests.conftest import eventually, publish_many, request_event, running
from tests.integration.test_reporting import _ticket_events

pytestmark = pytest.mark.integration

DAY = "2026-11-29"


async def test_exports_rollup_and_daily_report_agree_with_the_api(settings: Settings) -> None:
    events = []
    for site, count in (("cikarang-utara", 6), ("cibitung", 4)):
        for n in range(1, count + 1):
            request = request_event(["KIA"], site=site, session_id=f"{site}-20261129")
            ticket = _ticket_events(request.data.request_id, n, 60 * n)
            retagged = [new_event(e.data, site=site) for e in ticket]
            events += [request, *retagged]
    events.append(
        new_event(
            FeedbackSubmitted(
                feedback_id=new_id(), request_id="r", session_id="cikarang-utara-20261129",
                service="KIA", scores=dict.fromkeys(ELEMENTS, 4),
                submitted_at=datetime(2026, 11, 29, 4, 0, tzinfo=UTC),
            ),
            site="cikarang-utara",
        )
    )  # fmt: skip
    async with running("reporting", settings) as svc:
        await publish_many(settings, events)

        async def rolled_up() -> dict[str, object] | None:
            r = await svc.http.get("/api/v1/kabupaten/summary", params={"date": DAY})
            body: dict[str, object] = r.json()
            return body if body["completed"] == 10 else None

        kabupaten = await eventually(rolled_up)
        sites = kabupaten["sites"]
        assert isinstance(sites, list)
        assert [(s["site"], s["completed"]) for s in sites] == [
            ("cibitung", 4),
            ("cikarang-utara", 6),
        ]

        api = (
            await svc.http.get("/api/v1/sites/cikarang-utara/summary", params={"date": DAY})
        ).json()
        period = {"from": DAY, "to": DAY}
        text = (await svc.http.get("/api/v1/sites/cikarang-utara/export.csv", params=period)).text
        table = list(csv.reader(io.StringIO(text)))
        total = table[-1]
        assert total[2] == "SEMUA / ALL"
        assert [int(v) for v in total[3:6]] == [api["issued"], api["called"], api["completed"]]
        assert float(total[6]) == round(api["wait_seconds"]["p50"] / 60, 1)

        xlsx = await svc.http.get("/api/v1/sites/cikarang-utara/export.xlsx", params=period)
        book = load_workbook(io.BytesIO(xlsx.content))
        rows = list(book["Ringkasan"].iter_rows(values_only=True))
        assert rows[-1][3:6] == (api["issued"], api["called"], api["completed"])
        ikm = {r[0]: r[1] for r in book["IKM"].iter_rows(values_only=True) if r and r[0]}
        assert ikm["IKM"] == 100.0 and ikm["Mutu / Grade"] == "A"

        page = await svc.http.get("/reports/daily", params={"site": "cikarang-utara", "date": DAY})
        assert page.status_code == 200
        assert "IKM 100.00" in page.text and "GRATIS" in page.text
        assert f'<th class="n">{api["completed"]}</th>' in page.text

        wrong = await svc.http.get(
            "/api/v1/sites/cikarang-utara/export.csv", params={"from": DAY, "to": "2026-11-01"}
        )
        assert wrong.status_code == 422 and wrong.json()["error"]["code"] == "period_invalid"
