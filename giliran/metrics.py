"""Prometheus metrics every service shares (bus, consumers, HTTP) and the HTTP edge middleware
that measures requests and gives each one its correlation id and server span."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from giliran import telemetry
from giliran.store import STORE_COMMANDS

log = logging.getLogger("giliran.http")

# No `*_created` series beside every counter and histogram: Prometheus does not need them and
# they double what a scrape carries.
disable_created_metrics()  # type: ignore[no-untyped-call]

# Seconds. Handlers and requests here take milliseconds; the top buckets catch a store or a
# gateway that hangs until its timeout.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class BusMetrics:
    """What a service moves over the bus. Labels are bounded: event types are the contract's,
    consumers are the service's own durables."""

    published: Counter
    handler_seconds: Histogram
    pending: Gauge
    ack_pending: Gauge
    redelivered: Gauge
    outbox_pending: Gauge
    bus_connected: Gauge

    # Labelled children by event type: labels() takes a lock and builds a tuple on every call.
    _published: dict[str, Any] = field(default_factory=dict)

    def count_published(self, event_type: str) -> None:
        child = self._published.get(event_type)
        if child is None:
            child = self._published[event_type] = self.published.labels(event_type)
        child.inc()

    @classmethod
    def create(cls, registry: CollectorRegistry) -> BusMetrics:
        return cls(
            published=Counter(
                "giliran_events_published",
                "Events the outbox relay published to the stream, by type",
                ["type"],
                registry=registry,
            ),
            handler_seconds=Histogram(
                "giliran_event_handler_seconds",
                "Time a consumer's handler took for one event (inbox check and ack excluded)",
                ["consumer", "type"],
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
            pending=Gauge(
                "giliran_consumer_pending",
                "Messages in the stream a durable consumer has not been given yet (lag)",
                ["consumer"],
                registry=registry,
            ),
            ack_pending=Gauge(
                "giliran_consumer_ack_pending",
                "Messages given to a durable consumer and not acknowledged yet",
                ["consumer"],
                registry=registry,
            ),
            redelivered=Gauge(
                "giliran_consumer_redelivered",
                "Messages of a durable consumer delivered more than once and still unacked",
                ["consumer"],
                registry=registry,
            ),
            outbox_pending=Gauge(
                "giliran_outbox_pending",
                "Documents of this service holding events not yet on the bus",
                registry=registry,
            ),
            bus_connected=Gauge(
                "giliran_bus_connected",
                "1 while this process is connected to NATS",
                registry=registry,
            ),
        )


def http_duration(registry: CollectorRegistry) -> Histogram:
    return Histogram(
        "giliran_http_request_duration_seconds",
        "HTTP requests by route template (never the raw path: it may hold tokens), method and "
        "status; server push streams count until their headers are sent",
        ["method", "route", "status"],
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )


# Probes, scrapes and page assets: measured, not logged (they would drown the access log).
QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics", "/static"})


def route_of(scope: Scope) -> str:
    """The matched route's template (/api/v1/tickets/{ticket_id}); a mount's prefix; or
    "unmatched" (a 404 must not add a label value per path tried)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    root = scope.get("root_path") or ""
    return str(root) if root.startswith("/static") else "unmatched"


class ObservedHttp:
    """Outermost middleware: correlation id (X-Request-ID in, or a traceparent's trace id, or a
    new one; echoed in the response), a server span when tracing, the latency histogram, and
    one access log line per request (route template, status, duration).

    Runs for every request of every service: the headers are read in one pass over the raw
    list, labelled histogram children are kept, and no span or log record is prepared when
    tracing or the access log is off (ADR 0208; bench/middleware_cpu.py measures it)."""

    def __init__(self, app: ASGIApp, duration: Histogram) -> None:
        self.app = app
        self.duration = duration
        # Labelled children by (method, route, status): labels() takes a lock and builds a
        # tuple per call. As many as the histogram's own series, so no new bound is needed.
        self._children: dict[tuple[str, str, str], Any] = {}

    def _observe(self, method: str, route: str, status: int, elapsed: float) -> None:
        key = (method, route, str(status))
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.duration.labels(*key)
        child.observe(elapsed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        traceparent, request_id = _request_headers(scope)
        cid = (
            telemetry.acceptable_id(request_id)
            or _trace_id(traceparent)
            or telemetry.new_correlation_id()
        )
        method = str(scope.get("method", ""))
        start = time.perf_counter()
        status = 500
        done = False

        def finish() -> None:
            nonlocal done
            if done:
                return
            done = True
            route = route_of(scope)
            elapsed = time.perf_counter() - start
            self._observe(method, route, status, elapsed)
            if route not in QUIET_ROUTES and log.isEnabledFor(logging.INFO):
                log.info(
                    "%s %s %d %.1fms",
                    method,
                    route,
                    status,
                    elapsed * 1000,
                    extra={"http_method": method, "http_route": route, "http_status": status,
                           "duration_ms": round(elapsed * 1000, 2)},
                )  # fmt: skip

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                streaming = _echo_request_id(message, cid)
                await send(message)
                if streaming:
                    finish()  # a stream lasts as long as its viewer: measure until it opens
                return
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                finish()

        token = telemetry.bind_correlation(cid)
        try:
            if not telemetry.tracing():
                try:
                    await self.app(scope, receive, observed_send)
                finally:
                    finish()
                return
            with _server_span(scope, method, traceparent) as named:
                try:
                    await self.app(scope, receive, observed_send)
                finally:
                    finish()
                    named(route_of(scope), status)
        finally:
            telemetry.unbind_correlation(token)


_TRACEPARENT = telemetry.TRACEPARENT.lower().encode("latin-1")
_REQUEST_ID = telemetry.REQUEST_ID_HEADER.lower().encode("latin-1")


def _request_headers(scope: Scope) -> tuple[str | None, str | None]:
    """The traceparent and X-Request-ID a request carries, each its first value, in one pass
    over the raw headers (as Starlette's Headers.get reads them: names lowercase, latin-1)."""
    traceparent: str | None = None
    request_id: str | None = None
    for name, value in scope.get("headers", ()):
        if name == _TRACEPARENT and traceparent is None:
            traceparent = value.decode("latin-1")
        elif name == _REQUEST_ID and request_id is None:
            request_id = value.decode("latin-1")
    return traceparent, request_id


def _echo_request_id(message: Message, cid: str) -> bool:
    """Sets X-Request-ID on a response's start message (replacing any the app set, as
    MutableHeaders does); True when the response is a server push stream."""
    headers: list[tuple[bytes, bytes]] = []
    content_type: bytes | None = None
    for name, value in message.get("headers", ()):
        lowered = name.lower()
        if lowered == _REQUEST_ID:
            continue
        if lowered == b"content-type" and content_type is None:
            content_type = value
        headers.append((name, value))
    headers.append((_REQUEST_ID, cid.encode("latin-1")))
    message["headers"] = headers
    return content_type is not None and content_type.startswith(b"text/event-stream")


def _trace_id(traceparent: str | None) -> str | None:
    """The trace id of a valid W3C traceparent (version-traceid-spanid-flags)."""
    if not traceparent:
        return None
    parts = traceparent.split("-")
    if len(parts) != 4 or len(parts[1]) != 32 or parts[1] == "0" * 32:
        return None
    return telemetry.acceptable_id(parts[1].lower())


@contextmanager
def _server_span(
    scope: Scope, method: str, traceparent: str | None
) -> Iterator[Callable[[str, int], None]]:
    """A SERVER span continuing the caller's trace; named "METHOD /route/{template}" once the
    route is known (HTTP semantic conventions; no raw path, no query string)."""
    if not telemetry.tracing():
        yield lambda route, status: None
        return
    with telemetry.tracer().start_as_current_span(
        method,
        context=telemetry.context_of(traceparent),
        kind=SpanKind.SERVER,
        attributes={"http.request.method": method, "url.scheme": str(scope.get("scheme", ""))},
    ) as span:

        def named(route: str, status: int) -> None:
            span.update_name(f"{method} {route}")
            span.set_attribute("http.route", route)
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))

        yield named


class StoreCommandsCollector(Collector):
    """Exposes this process's store commands (giliran.store.STORE_COMMANDS) to Prometheus."""

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "giliran_store_commands",
            "Commands this process sent to the store, by command and collection",
            labels=["command", "collection"],
        )
        for (command, collection), n in sorted(STORE_COMMANDS.counts.items()):
            family.add_metric([command, collection], n)
        yield family
