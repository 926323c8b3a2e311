"""Estimated call time of a waiting ticket, pure: position, open capacity, recent service times."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from datetime import datetime, timedelta

# How many recent completions of a service describe its pace; older ones lag behind the session.
RECENT = 20


def line_capacity(counters: Sequence[Sequence[str]], service: str) -> float:
    """Counters' worth of attention a line gets: a counter serving k lines gives each about 1/k."""
    return sum(1 / len(services) for services in counters if service in services)


def estimate(
    *,
    position: int,
    capacity: float,
    service_seconds: Sequence[float],
    default: timedelta,
    now: datetime,
) -> datetime | None:
    """When the ticket with `position` tickets ahead should be called; None when no open counter
    serves its line (any number would be a guess).

    The pace is the median of the last RECENT service times of the line (robust to the one
    citizen whose paperwork took an hour), else `default`. With every counter busy, the next
    counter frees up after half a service on average, then each further ticket takes
    pace / capacity."""
    if capacity <= 0:
        return None
    recent = list(service_seconds)[-RECENT:]
    pace = statistics.median(recent) if recent else default.total_seconds()
    return now + timedelta(seconds=pace * (0.5 + position) / capacity)
