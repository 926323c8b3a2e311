"""The live session view: what the dashboard shows now, and a per-site signal that it changed."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

from pydantic import BaseModel

from giliran.store import Document, from_instant


class LineNow(BaseModel):
    service: str
    waiting: int
    longest_wait_seconds: float | None


class LiveView(BaseModel):
    site: str
    at: datetime
    version: int
    waiting: int
    longest_wait_seconds: float | None
    counters_active: int  # counters that called a ticket today
    counters_open: int = 0  # by counter.opened/closed: open now
    counters_paused: int = 0  # on a break (counter.closed with paused)
    serving: int = 0  # called and started, not finished
    served: int
    no_show: int
    lines: list[LineNow]


ENDED = ("completed_at", "no_show_at", "transferred_at", "cancelled_at")


def waiting(ticket: Document) -> bool:
    """In the line now: not yet called or ended, and present (a booking joins at check-in)."""
    present = ticket.get("arrived") is not False or bool(ticket.get("checked_in_at"))
    return present and not any(
        ticket.get(k) for k in ("called_at", "cancelled_at", "transferred_at", "no_show_at")
    )


def live_view(
    site: str,
    tickets: Sequence[Document],
    counters: Sequence[Document],
    now: datetime,
    version: int,
) -> LiveView:
    """Pure: the day's ticket facts and counter states at `now` -> the figures a waiting-room
    manager watches."""
    lines: dict[str, list[float]] = defaultdict(list)
    for t in tickets:
        lines.setdefault(t["service"], [])
        if waiting(t):
            joined = t.get("checked_in_at") or t["issued_at"]
            lines[t["service"]].append((now - from_instant(joined)).total_seconds())
    all_waits = [w for waits in lines.values() for w in waits]
    return LiveView(
        site=site,
        at=now,
        version=version,
        waiting=len(all_waits),
        longest_wait_seconds=max(all_waits) if all_waits else None,
        counters_active=len({t["counter"] for t in tickets if t.get("counter")}),
        counters_open=sum(1 for c in counters if c.get("state") == "open"),
        counters_paused=sum(1 for c in counters if c.get("state") == "paused"),
        serving=sum(1 for t in tickets if t.get("started_at") and not any(t.get(k) for k in ENDED)),
        served=sum(1 for t in tickets if t.get("completed_at")),
        no_show=sum(1 for t in tickets if t.get("no_show_at")),
        lines=[
            LineNow(
                service=service,
                waiting=len(waits),
                longest_wait_seconds=max(waits) if waits else None,
            )
            for service, waits in sorted(lines.items())
        ],
    )
