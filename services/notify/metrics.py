"""Notify's own metrics: messages per channel and outcome, and what they cost."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter


@dataclass
class NotifyMetrics:
    notifications: Counter
    cost_units: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> NotifyMetrics:
        return cls(
            notifications=Counter(
                "giliran_notifications",
                "Deliveries finished per channel and outcome (sent, failed, dropped as stale)",
                ["channel", "outcome"],
                registry=registry,
            ),
            cost_units=Counter(
                "giliran_notification_cost_units",
                "Cost units of sent messages per channel (SMS segments, or one per message)",
                ["channel"],
                registry=registry,
            ),
        )

    def finished(self, channel: str, outcome: str, cost: int = 0) -> None:
        self.notifications.labels(channel, outcome).inc()
        # Touched even at zero: a free channel's line is on the dashboard too.
        self.cost_units.labels(channel).inc(cost)
