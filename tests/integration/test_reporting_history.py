"""A recorded multi-site weekend (an MSC Sunday over two sessions, three BOTRAM fairs; a few
thousand events incl. check-ins, quoted ETAs, outcomes, no-shows, pauses) goes through NATS into
reporting; every figure of the history API is checked against an independent computation from
the generated lifecycles, and a replay rebuilds the same projections."""

from __future__ import annotations

import csv
import io
import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from giliran.contracts import (
    Channel,
    CitizenRef,
    CounterClosed,
    CounterOpened,
    Outcome,
    PriorityReason,
    RequestCheckedIn,
    RequestSubmitted,
    TicketCalled,
    TicketCompleted,
    TicketIssued,
    TicketNoShow,
    TicketStarted,
    new_event,
)
from giliran.settings import Settings
from services.reporting.rebuild import rebuild
from tests.conftest import eventually, publish_many, running

pytestmark = pytest.mark.integration

SUNDAY = datetime(2026, 11, 29, 2, 0, tzinfo=UTC)  # 09:00 WIB
SATURDAY = SUNDAY - timedelta(days=1)
SESSIONS = [  # site, session, opens (UTC), tickets
    ("cikarang-utara", "cikarang-utara-20261129", SUNDAY, 160),
    ("cikarang-utara", "cikarang-utara-20261122", SUNDAY - timedelta(days=7), 60),
    ("botram-setu", "botram-setu-20261128", SATURDAY, 140),
    ("botram-cibitung", "botram-cibitung-20261128", SATURDAY, 100),
    ("botram-cibitung", "botram-cibitung-20261129", SUNDAY, 40),
]
SERVICES = ["KTP-CETAK", "KK-UBAH", "KIA"]
TARGET = 1800.0


@dataclass
class Lifecycle:
    site: str
    session: str
    service: str
    wait: float | None  # None: never called
    service_time: float | None  # None: not completed (a no-show)
    eta_error: float | None  # actual call - quoted call; None: no quote
    outcome: Outcome
    priority: PriorityReason | None
    booked: bool


def recorded_weekend(seed: int = 3, scale: int = 1) -> tuple[list[Lifecycle], list[Any]]:
    """The weekend's lifecycles and events; `scale` divides the number of tickets."""
    rng = random.Random(seed)
    lifecycles, events = [], []
    for site, session, opens, full in SESSIONS:
        tickets = max(3, full // scale)
        for counter in ("1", "2", "3"):  # open, then counter 3 pauses and 2 closes
            events.append(CounterOpened(counter=counter, session_id=session,
                                        services=SERVICES, at=opens))  # fmt: skip
        events.append(CounterClosed(counter="3", session_id=session,
                                    at=opens + timedelta(hours=1), paused=True))  # fmt: skip
        events.append(CounterClosed(counter="2", session_id=session,
                                    at=opens + timedelta(hours=2)))  # fmt: skip
        for n in range(1, tickets + 1):
            wait = rng.choice([None] + [rng.uniform(5, 5400)] * 9)
            if wait is not None and abs(wait - TARGET) < 0.03 * TARGET:
                wait += 120  # keep clear of the one sketch bucket that straddles the target
            life = Lifecycle(
                site=site, session=session, service=rng.choice(SERVICES), wait=wait,
                service_time=None if wait is None or rng.random() < 0.1
                else rng.uniform(60, 1500),
                eta_error=rng.choice([None, rng.uniform(-1500, 1500)]),
                outcome=rng.choice(list(Outcome)),
                priority=rng.choice([None, None, None, PriorityReason.ELDERLY,
                                     PriorityReason.PREGNANCY]),
                booked=rng.random() < 0.2,
            )  # fmt: skip
            lifecycles.append(life)
            events += _events(life, n, opens + timedelta(seconds=rng.uniform(0, 5400)), rng)
    # Sessions are named <site>-<yyyymmdd>.
    return lifecycles, [new_event(d, site=d.session_id.rsplit("-", 1)[0]) for d in events]


def _events(life: Lifecycle, n: int, issued: datetime, rng: random.Random) -> list[Any]:
    request_id = f"{life.session}-r{n}"
    queued = issued + timedelta(minutes=5) if life.booked else issued
    facts = {
        "ticket_id": f"{request_id}-{life.service}", "request_id": request_id,
        "session_id": life.session, "service": life.service, "number": f"A-{n:03d}",
        "issued_at": issued,
    }  # fmt: skip
    found: list[Any] = [
        RequestSubmitted(
            request_id=request_id, session_id=life.session, services=[life.service],
            channel=rng.choice(list(Channel)), citizen=CitizenRef(), submitted_at=issued,
            priority=life.priority, arrived=not life.booked,
            appointment_at=queued if life.booked else None,
        ),
    ]  # fmt: skip
    called = None if life.wait is None else queued + timedelta(seconds=life.wait)
    eta = None
    if life.eta_error is not None and called is not None:
        eta = called - timedelta(seconds=life.eta_error)
    elif life.eta_error is not None:
        eta = issued + timedelta(minutes=30)  # quoted, never called: not in ETA accuracy
    found.append(TicketIssued(**facts, waiting_ahead=n, eta=eta, priority=life.priority,
                              arrived=not life.booked))  # fmt: skip
    if life.booked:
        found.append(RequestCheckedIn(request_id=request_id, session_id=life.session,
                                      checked_in_at=queued))  # fmt: skip
    if called is None:
        return found
    counter = rng.choice(["1", "2", "3"])
    found.append(TicketCalled(**facts, counter=counter, called_at=called,
                              queued_at=queued if life.booked else None))  # fmt: skip
    if life.service_time is None:
        found.append(TicketNoShow(**facts, counter=counter,
                                  marked_at=called + timedelta(minutes=3), recalls=2))  # fmt: skip
        return found
    found.append(TicketStarted(**facts, counter=counter, called_at=called,
                               started_at=called + timedelta(seconds=30)))  # fmt: skip
    done = TicketCompleted(**facts, counter=counter, called_at=called, outcome=life.outcome,
                           completed_at=called + timedelta(seconds=life.service_time))  # fmt: skip
    # A completion published before its call now and then: the wait must still be counted once.
    return [*found[:-2], done, *found[-2:]] if rng.random() < 0.2 else [*found, done]


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


def check(figures: dict[str, Any], lives: list[Lifecycle]) -> None:
    """Every figure of a Counts body against the lifecycles it covers."""
    called = [x for x in lives if x.wait is not None]
    completed = [x for x in called if x.service_time is not None]
    waits = [x.wait for x in called if x.wait is not None]
    assert figures["issued"] == len(lives)
    assert figures["called"] == len(called)
    assert figures["started"] == figures["completed"] == len(completed)
    assert figures["no_show"] == len(called) - len(completed)
    assert figures["rechecked"] == 0 and figures["cancelled"] == 0
    outcomes: dict[str, int] = {}
    for x in completed:
        outcomes[x.outcome.value] = outcomes.get(x.outcome.value, 0) + 1
    assert figures["outcomes"] == dict(sorted(outcomes.items()))
    priority: dict[str, int] = {}
    for x in lives:
        if x.priority:
            priority[x.priority.value] = priority.get(x.priority.value, 0) + 1
    assert figures["priority"] == dict(sorted(priority.items()))
    wait = figures["wait_seconds"]
    if waits:
        assert wait["count"] == len(waits)
        assert wait["max"] == pytest.approx(max(waits), abs=1e-6)
        assert wait["mean"] == pytest.approx(sum(waits) / len(waits), abs=0.01)
        for q in (50, 90, 95):
            assert wait[f"p{q}"] == pytest.approx(nearest_rank(waits, q), rel=0.0101)
        within = sum(1 for w in waits if w <= TARGET) / len(waits)
        assert figures["within_target"] == round(within, 4)
    services = [x.service_time for x in completed if x.service_time is not None]
    if services:
        assert figures["service_seconds"]["p50"] == pytest.approx(
            nearest_rank(services, 50), rel=0.0101
        )
    quoted = [x.eta_error for x in called if x.eta_error is not None]
    if quoted:
        eta = figures["eta"]
        assert eta["quoted"] == len(quoted)
        errors = [abs(e) for e in quoted]
        assert eta["median_abs_error_seconds"] == pytest.approx(
            nearest_rank(errors, 50), rel=0.0101, abs=1.0
        )
        assert eta["within_10_min"] == round(sum(1 for e in errors if e <= 600) / len(errors), 4)
        assert eta["mean_error_seconds"] == pytest.approx(sum(quoted) / len(quoted), abs=0.01)


async def test_history_of_a_recorded_weekend_matches_an_independent_computation(
    settings: Settings,
) -> None:
    lives, events = recorded_weekend()
    assert len(events) > 2000
    async with running("reporting", settings) as svc:
        await publish_many(settings, events)
        period = {"from": "2026-11-22", "to": "2026-11-29"}

        async def caught_up() -> bool:
            metrics = (await svc.http.get("/metrics")).text
            handled = sum(
                float(line.rsplit(" ", 1)[1])
                for line in metrics.splitlines()
                if line.startswith("giliran_events_handled_total{")
            )
            return handled >= len(events)

        await eventually(caught_up, within=150, interval=0.5)
        kabupaten = (await svc.http.get("/api/v1/kabupaten/history", params=period)).json()
        check(kabupaten["totals"], lives)
        assert kabupaten["submitted"] == len(lives)
        sites = {s["site"]: s for s in kabupaten["sites"]}
        assert sorted(sites) == ["botram-cibitung", "botram-setu", "cikarang-utara"]
        for site, figures in sites.items():
            check(figures, [x for x in lives if x.site == site])
        assert sites["cikarang-utara"]["programme"] == "MSC"
        assert sites["cikarang-utara"]["name"] == "Kecamatan Cikarang Utara"
        assert sites["botram-setu"]["programme"] == "BOTRAM"
        fairs = [(f["site"], f["session_id"]) for f in kabupaten["fairs"]]
        assert fairs == [
            ("botram-cibitung", "botram-cibitung-20261128"),
            ("botram-setu", "botram-setu-20261128"),
            ("botram-cibitung", "botram-cibitung-20261129"),
        ]
        for fair in kabupaten["fairs"]:
            check(fair, [x for x in lives if x.session == fair["session_id"]])

        site = (await svc.http.get("/api/v1/sites/cikarang-utara/history", params=period)).json()
        check(site, [x for x in lives if x.site == "cikarang-utara"])
        assert [d["date"] for d in site["days"]] == ["2026-11-22", "2026-11-29"]
        assert [s["session_id"] for s in site["sessions"]] == [
            "cikarang-utara-20261129",
            "cikarang-utara-20261122",
        ]
        for session in site["sessions"]:
            check(session, [x for x in lives if x.session == session["session_id"]])

        one = await svc.http.get("/api/v1/sites/cikarang-utara/sessions/cikarang-utara-20261129")
        body = one.json()
        session_lives = [x for x in lives if x.session == "cikarang-utara-20261129"]
        check(body, session_lives)
        for service in body["by_service"]:
            check(service, [x for x in session_lives if x.service == service["service"]])
        assert body["booked"] == body["checked_in"] == sum(1 for x in session_lives if x.booked)
        assert sum(c["called"] for c in body["by_counter"]) == body["called"]
        assert all(c["issued"] == 0 for c in body["by_counter"])  # issued to lines, not counters

        missing = await svc.http.get("/api/v1/sites/cikarang-utara/sessions/nope")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        wrong = await svc.http.get(
            "/api/v1/kabupaten/history", params={"from": "2026-11-29", "to": "2026-11-01"}
        )
        assert wrong.status_code == 422

        # The printable daily report carries the ETA accuracy and the outcomes of the API.
        day = (
            await svc.http.get(
                "/api/v1/sites/cikarang-utara/summary", params={"date": "2026-11-29"}
            )
        ).json()
        check(day, session_lives)
        report = await svc.http.get(
            "/reports/daily", params={"site": "cikarang-utara", "date": "2026-11-29"}
        )
        eta = day["eta"]
        assert f'<th class="n">{eta["quoted"]}</th>' in report.text
        assert f"{eta['within_10_min'] * 100:.0f} %" in report.text
        assert f"{eta['median_abs_error_seconds'] / 60:.1f} menit" in report.text
        for code, n in day["outcomes"].items():
            label = {"served": "dilayani", "documents_incomplete": "berkas belum lengkap",
                     "referred": "dirujuk", "rejected": "ditolak"}[code]  # fmt: skip
            assert f"{label} / " in report.text and f"<b>{n}</b>" in report.text
        assert f'id="no-show">{day["no_show"]}<' in report.text

        export = await svc.http.get(
            "/api/v1/sites/cikarang-utara/export.csv",
            params={"from": "2026-11-29", "to": "2026-11-29"},
        )
        header, *_, total = list(csv.reader(io.StringIO(export.text)))
        row = dict(zip(header, total, strict=True))
        assert int(row["Tidak hadir / No-shows"]) == day["no_show"]
        assert int(row["Tiket dengan perkiraan / Tickets quoted"]) == eta["quoted"]
        assert float(row["Perkiraan tepat ±10 menit (%) / ETA within ±10 min (%)"]) == round(
            eta["within_10_min"] * 100, 1
        )

        # The pages show the same numbers.
        page = await svc.http.get("/history/kabupaten", params=period)
        assert page.status_code == 200
        assert f'data-figure="issued">{len(lives)}<' in page.text
        assert "<svg" in page.text and "kozea.github.io" not in page.text  # no script from a CDN
        assert "<script src" not in page.text

        result = await rebuild(settings, f"{settings.db_prefix}_hist", out=io.StringIO())
        assert result.equal, [c for c in result.comparisons if not c.equal]
