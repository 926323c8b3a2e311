"""The queue's own metrics: waiting tickets and the oldest wait per line, open sessions, and the
display boards connected now (for the "wait above target" and "board disconnected" alerts)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from prometheus_client import CollectorRegistry, Gauge

from giliran.store import from_instant
from services.queue.handlers import Queue


@dataclass
class QueueMetrics:
    waiting: Gauge
    oldest_wait: Gauge
    session_open: Gauge
    target_wait: Gauge
    board_connections: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry, target_wait_minutes: float) -> QueueMetrics:
        metrics = cls(
            waiting=Gauge(
                "giliran_queue_waiting",
                "Tickets waiting (arrived, not yet called) per site and line (service code), "
                "in the running session",
                ["site", "line"],
                registry=registry,
            ),
            oldest_wait=Gauge(
                "giliran_queue_oldest_wait_seconds",
                "How long the longest-waiting ticket of a line has waited",
                ["site", "line"],
                registry=registry,
            ),
            session_open=Gauge(
                "giliran_queue_session_open",
                "1 while a session is running at the site (as the queue knows it)",
                ["site"],
                registry=registry,
            ),
            target_wait=Gauge(
                "giliran_queue_target_wait_seconds",
                "The target wait (GILIRAN_TARGET_WAIT_MINUTES): longer is 'wait above target'",
                registry=registry,
            ),
            board_connections=Gauge(
                "giliran_board_connections",
                "Waiting-room display boards (server-push streams) connected to this instance",
                ["site"],
                registry=registry,
            ),
        )
        metrics.target_wait.set(target_wait_minutes * 60)
        return metrics

    async def refresh(self, queue: Queue) -> None:
        """Read every running session's lines; sites without one report no lines (label sets
        stay bounded by the catalogue)."""
        now = queue.clock()
        lines: dict[tuple[str, str], tuple[int, float]] = {}
        sessions: dict[str, bool] = {}
        for slug, site in queue.catalogue.sites.items():
            session = await queue.current_session(slug)
            sessions[slug] = session is not None
            if session is None:
                continue
            for service in site.services:
                # From the lines in memory (ADR 0160): a point read of each line otherwise.
                waiting, first = await queue.memory.waiting(slug, session, service.code)
                oldest = first[0].get("queued_at") if first else None
                lines[(slug, service.code)] = (waiting, _age(now, oldest))
        self.waiting.clear()
        self.oldest_wait.clear()
        for (slug, line), (waiting, oldest) in lines.items():
            self.waiting.labels(slug, line).set(waiting)
            self.oldest_wait.labels(slug, line).set(oldest)
        for slug, running in sessions.items():
            self.session_open.labels(slug).set(1 if running else 0)
            self.board_connections.labels(slug)  # a site's zero is there before any board


def _age(now: datetime, queued_at: str | None) -> float:
    return max(0.0, (now - from_instant(queued_at)).total_seconds()) if queued_at else 0.0
