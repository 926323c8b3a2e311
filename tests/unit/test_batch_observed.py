"""A batch handler is timed once per batch (giliran_event_handler_seconds, type=batch)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from giliran.runtime import ServiceRuntime
from giliran.settings import Settings


def test_one_batch_is_timed_once() -> None:
    async def run() -> None:
        runtime = ServiceRuntime("reporting", Settings(demo=True))
        calls: list[int] = []

        async def fold(events: Sequence[Any]) -> set[str]:
            calls.append(len(events))
            return set()

        consumer = runtime.consume("projections", "giliran.*.ticket.*", {}, batch_handler=fold)
        assert consumer.batch_handler is not None
        await consumer.batch_handler([])
        assert calls == [0]
        count = runtime.registry.get_sample_value(
            "giliran_event_handler_seconds_count",
            {"consumer": "reporting-projections", "type": "batch"},
        )
        assert count == 1, f"one batch folded, observed {count} times"
        await runtime.client.close()

    asyncio.run(run())
