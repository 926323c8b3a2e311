"""What observability adds per event and per HTTP request, measured in this process.

Times, per call: a consumer's handler (a no-op, so only the wrapper is measured) bare and inside
giliran.runtime.observed (correlation id, handler histogram; with tracing on: a "process" span;
with GILIRAN_LOG_EVENTS: a JSON log line to /dev/null); new_event() with tracing off and on; and
one HTTP request through a small FastAPI app with and without the ObservedHttp middleware.
Spans go to a BatchSpanProcessor whose exporter drops them (the cost of making them, not of
shipping them).

    .venv/bin/python bench/observe.py [--events 20000] [--requests 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from fastapi import FastAPI
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from prometheus_client import CollectorRegistry

from giliran import telemetry
from giliran.contracts import Event, TicketCalled, new_event, new_id, utcnow
from giliran.metrics import BusMetrics, ObservedHttp, http_duration
from giliran.runtime import observed


class Dropped(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def called() -> TicketCalled:
    request_id = new_id()
    now = utcnow()
    return TicketCalled(
        ticket_id=f"{request_id}-KTP-REKAM",
        request_id=request_id,
        session_id="cikarang-utara-20261129",
        service="KTP-REKAM",
        number="A-001",
        issued_at=now,
        counter="2",
        called_at=now,
        queued_at=now,
    )


async def per_call(label: str, n: int, call: Callable[[], Awaitable[Any]]) -> float:
    for _ in range(min(n, 500)):  # warm up
        await call()
    started = time.perf_counter()
    for _ in range(n):
        await call()
    micros = (time.perf_counter() - started) / n * 1e6
    print(f"  {label:<62} {micros:>8.1f} µs")
    return micros


async def run(n: int, requests: int) -> None:
    print(f"{os.cpu_count()} cores; {n:,} events, {requests:,} requests per figure\n")
    event = new_event(called(), site="cikarang-utara")
    metrics = BusMetrics.create(CollectorRegistry())

    async def handler(_: Event[Any]) -> None:
        return None

    wrapped = observed("bench-consumer", handler, metrics)
    logged = observed("bench-consumer", handler, metrics, log_events=True)
    telemetry.configure_logging("json", "INFO", "bench")
    handler_of_root: Any = logging.getLogger().handlers[0]
    handler_of_root.stream = Path(os.devnull).open("w")  # noqa: ASYNC230, SIM115

    print("consumer handler (per event)")
    bare = await per_call("bare handler", n, lambda: handler(event))
    off = await per_call("observed, tracing off", n, lambda: wrapped(event))
    await per_call(
        "observed, tracing off, GILIRAN_LOG_EVENTS (JSON line)", n, lambda: logged(event)
    )
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Dropped()))
    telemetry.use_tracer_provider(provider)
    on = await per_call("observed, tracing on (process span)", n, lambda: wrapped(event))
    telemetry.use_tracer_provider(None)
    print(f"  -> added: {off - bare:.1f} µs off, {on - bare:.1f} µs with tracing\n")

    print("new_event (per event created)")
    data = called()

    async def make() -> None:
        new_event(data, site="cikarang-utara")

    await per_call("new_event, tracing off", n, make)
    telemetry.use_tracer_provider(provider)
    with telemetry.correlated("bench"), telemetry.tracer().start_as_current_span("request"):
        await per_call("new_event inside a span, tracing on (traceparent stamped)", n, make)
    telemetry.use_tracer_provider(None)

    print("\nHTTP (per request, in-process ASGI, GET /api/v1/tickets/{ticket_id})")
    variants = (
        ("without ObservedHttp", False, logging.INFO),
        ("with ObservedHttp, access log off (WARNING)", True, logging.WARNING),
        ("with ObservedHttp, access log on (JSON line)", True, logging.INFO),
    )
    for label, wrap, level in variants:
        logging.getLogger("giliran.http").setLevel(level)
        app = FastAPI()

        @app.get("/api/v1/tickets/{ticket_id}")
        async def ticket(ticket_id: str) -> dict[str, str]:
            return {"ticket_id": ticket_id}

        if wrap:
            app.add_middleware(ObservedHttp, duration=http_duration(CollectorRegistry()))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:

            async def get(c: httpx.AsyncClient = client) -> None:
                await c.get("/api/v1/tickets/T-1")

            await per_call(label, requests, get)
    provider.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    asyncio.run(run(args.events, args.requests))


if __name__ == "__main__":
    main()
