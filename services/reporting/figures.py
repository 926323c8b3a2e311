"""The report models (what the API, exports and pages show) and how added-up cells become them."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date
from typing import Any

from pydantic import BaseModel

from services.reporting import sketch
from services.reporting.cells import ETA, ISSUE_TIME, SERVICE, WAIT, Tally, tally
from services.reporting.domain import Distribution


class EtaAccuracy(BaseModel):
    """How wrong the call time quoted at issue was, for tickets that had a quote and were called."""

    quoted: int
    median_abs_error_seconds: float | None
    p90_abs_error_seconds: float | None
    within_10_min: float | None  # share called within ±10 minutes of the quoted time
    mean_error_seconds: float | None  # signed: positive means called later than quoted


class Counts(BaseModel):
    issued: int
    called: int
    completed: int
    no_show: int
    transferred: int
    cancelled: int
    started: int = 0
    rechecked: int = 0  # tickets issued again to a citizen who missed their call
    within_target: float | None  # share of called tickets called within the target wait
    wait_seconds: Distribution
    service_seconds: Distribution
    outcomes: dict[str, int] = {}
    priority: dict[str, int] = {}
    eta: EtaAccuracy | None = None


class ServiceSummary(Counts):
    service: str


class CounterSummary(Counts):
    """Figures from the call onward: tickets are issued to a line, not to a counter, so a
    counter's `issued` is 0."""

    counter: str


class HourSummary(Counts):
    hour: str  # site-local hour the tickets were issued, "09"


class SessionSummary(Counts):
    session_id: str
    day: date


class ChannelFigures(BaseModel):
    """Per channel and day: `sent` = accepted by the gateway (handed over); `delivered` and
    `undelivered` = what its delivery reports said of those; `refused` = the part of `failed`
    the gateway answered with a no."""

    sent: int = 0
    delivered: int = 0
    undelivered: int = 0
    failed: int = 0
    refused: int = 0
    cost_units: int = 0


class DaySummary(Counts):
    site: str
    date: date
    timezone: str
    target_wait_minutes: float
    submitted: int
    checked_in: int = 0
    booked: int = 0
    by_service: list[ServiceSummary]
    by_counter: list[CounterSummary]
    by_hour: list[HourSummary]
    by_session: list[SessionSummary] = []
    by_channel: dict[str, int]
    notifications: dict[str, ChannelFigures] = {}
    # True while the service still fills the notification cells from facts folded before they
    # existed (ADR 0229): the notification figures may be short until it is done.
    notifications_partial: bool = False


class KabupatenSummary(BaseModel):
    """Every site with activity on a day, side by side, and their sum."""

    date: date
    sites: list[DaySummary]
    submitted: int
    issued: int
    called: int
    completed: int
    totals: Counts | None = None


def distribution(s: sketch.Sketch) -> Distribution:
    if s.n == 0:
        return Distribution(count=0, mean=None, p50=None, p90=None, p95=None, max=None,
                            relative_accuracy=sketch.ALPHA)  # fmt: skip
    mean = s.mean
    return Distribution(
        count=s.n,
        mean=None if mean is None else round(mean, 3),
        p50=_round(s.quantile(50)),
        p90=_round(s.quantile(90)),
        p95=_round(s.quantile(95)),
        max=s.max,
        relative_accuracy=sketch.ALPHA,
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def eta_accuracy(t: Tally) -> EtaAccuracy | None:
    errors = t.sketches.get(ETA)
    if errors is None or errors.n == 0:
        return None
    return EtaAccuracy(
        quoted=errors.n,
        median_abs_error_seconds=_round(errors.quantile(50)),
        p90_abs_error_seconds=_round(errors.quantile(90)),
        within_10_min=round(t.count("eta_within") / errors.n, 4),
        mean_error_seconds=round(t.sums_ms.get("eta_signed", 0) / errors.n / 1000, 3),
    )


def counts(t: Tally, target_wait_seconds: float) -> dict[str, Any]:
    waits = t.sketches.get(WAIT) or sketch.Sketch()
    return {
        "issued": t.count("issued"),
        "called": t.count("called"),
        "started": t.count("started"),
        "completed": t.count("completed"),
        "no_show": t.count("no_show"),
        "transferred": t.count("transferred"),
        "cancelled": t.count("cancelled"),
        "rechecked": t.count("rechecked"),
        "within_target": (
            round(waits.count_at_most(target_wait_seconds) / waits.n, 4) if waits.n else None
        ),
        "wait_seconds": distribution(waits),
        "service_seconds": distribution(t.sketches.get(SERVICE) or sketch.Sketch()),
        "outcomes": t.prefixed("outcome"),
        "priority": t.prefixed("priority"),
        "eta": eta_accuracy(t),
    }


def grouped(
    cells: Iterable[Mapping[str, Any]], key: Callable[[Mapping[str, Any]], str | None]
) -> dict[str, Tally]:
    """Cells added up per group (cells whose key is None are left out), in key order."""
    groups: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for cell in cells:
        k = key(cell)
        if k is not None:
            groups[k].append(cell)
    return {k: tally(groups[k]) for k in sorted(groups)}


def channel_figures(cells: Iterable[Mapping[str, Any]]) -> dict[str, ChannelFigures]:
    """Notification cells added up per channel; a channel whose deliveries all moved to another
    day's cells (failed here, sent the next day) is left out, as one with no delivery."""
    found: dict[str, ChannelFigures] = {}
    for channel, t in grouped(cells, lambda c: str(c["channel"])).items():
        figures = ChannelFigures(**{f: t.count(f) for f in ChannelFigures.model_fields})
        if figures.sent or figures.failed:
            found[channel] = figures
    return found


def day_figures(
    site: str,
    day: date,
    cells: Sequence[Mapping[str, Any]],
    request_cells: Sequence[Mapping[str, Any]],
    *,
    timezone: str,
    target_wait_minutes: float,
    notifications: Mapping[str, ChannelFigures],
    notifications_partial: bool = False,
) -> DaySummary:
    """A site's day from its cells: totals, then per service, counter, hour and session."""
    target = target_wait_minutes * 60
    requests = tally(request_cells)
    channels = grouped(request_cells, lambda c: str(c["channel"]) or None)
    return DaySummary(
        site=site,
        date=day,
        timezone=timezone,
        target_wait_minutes=target_wait_minutes,
        submitted=requests.count("submitted"),
        checked_in=requests.count("checked_in"),
        booked=requests.count("booked"),
        **counts(tally(cells), target),
        by_service=[
            ServiceSummary(service=k, **counts(t, target))
            for k, t in grouped(cells, lambda c: str(c["service"])).items()
        ],
        by_counter=[
            CounterSummary(counter=k, **counts(t, target))
            for k, t in grouped(
                cells, lambda c: None if c["counter"] == ISSUE_TIME else str(c["counter"])
            ).items()
        ],
        by_hour=[
            HourSummary(hour=k, **counts(t, target))
            for k, t in grouped(cells, lambda c: str(c["hour"])).items()
        ],
        by_session=[
            SessionSummary(session_id=k, day=day, **counts(t, target))
            for k, t in grouped(cells, lambda c: str(c["session_id"])).items()
        ],
        by_channel={k: t.count("submitted") for k, t in channels.items() if t.count("submitted")},
        notifications=dict(sorted(notifications.items())),
        notifications_partial=notifications_partial,
    )
