"""Reporting rules with no I/O: which local day an instant belongs to, and wait-time statistics."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date, datetime
from zoneinfo import ZoneInfo

from pydantic import BaseModel


def local_day(instant: datetime, timezone: str) -> date:
    """Reports are per site-local day (WIB), not per UTC day."""
    return instant.astimezone(ZoneInfo(timezone)).date()


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in 0..100)."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


class Distribution(BaseModel):
    count: int
    mean: float | None
    p50: float | None
    p90: float | None
    p95: float | None
    max: float | None
    # 0 when computed from every sample; else each percentile is within this share of the exact
    # one (services/reporting/sketch.py); count, mean and max are always exact.
    relative_accuracy: float = 0.0


def distribution(values: Sequence[float]) -> Distribution:
    if not values:
        return Distribution(count=0, mean=None, p50=None, p90=None, p95=None, max=None)
    ordered = sorted(values)
    return Distribution(
        count=len(ordered),
        mean=round(sum(ordered) / len(ordered), 3),
        p50=percentile(ordered, 50),
        p90=percentile(ordered, 90),
        p95=percentile(ordered, 95),
        max=ordered[-1],
    )
