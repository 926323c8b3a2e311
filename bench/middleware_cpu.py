"""CPU per request that each HTTP middleware every service runs adds, measured in this process.

Each middleware (and the five together, in the order a service stacks them, uvicorn's proxy
headers outermost) wraps a bare ASGI app that reads the body and answers 2 bytes; a request
carries the headers a kiosk's POST does. Printed: process CPU µs per request (the best of 7
runs of `--requests`), and what the layer adds to the bare app. Run it with another tree's code
to compare (`-P` keeps this directory off sys.path):

    .venv/bin/python bench/middleware_cpu.py --requests 20000
    PYTHONPATH=/tmp/main-tree .venv/bin/python -P bench/middleware_cpu.py

`--app` times instead a GET through intake's whole app (every middleware, FastAPI's routing, a
route that needs no store), `--tracing` with tracing on (spans made, exported to a no-op):

    .venv/bin/python bench/middleware_cpu.py --app --tracing
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from giliran.hardening import BodyLimit, SameOrigin, SecurityHeaders
from giliran.metrics import ObservedHttp, http_duration

PUBLIC = ["http://giliran.example"]
# This checkout's sites, whichever tree's code runs (PYTHONPATH).
CATALOGUE = Path(__file__).resolve().parent.parent / "deploy" / "sites"


async def bare(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"2")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"{}"})


def request(method: str) -> dict[str, Any]:
    return {
        "type": "http",
        "method": method,
        "scheme": "http",
        "path": "/api/v1/requests",
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1:8101"),
            (b"origin", b"http://127.0.0.1:8101"),
            (b"content-type", b"application/json"),
            (b"content-length", b"200"),
            (b"authorization", b"Bearer gl_x"),
            (b"user-agent", b"python-httpx/0.28"),
            (b"accept", b"*/*"),
            (b"accept-encoding", b"gzip"),
        ],
        "client": ("127.0.0.1", 5555),
        "server": ("127.0.0.1", 8101),
    }


async def receive() -> Message:
    return {"type": "http.request", "body": b"x" * 200, "more_body": False}


async def send(message: Message) -> None:
    return None


async def per_request(app: ASGIApp, method: str, n: int) -> float:
    """CPU µs per request, the best of 7 runs of `n` (after a warm-up)."""
    for _ in range(300):
        await app(request(method), receive, send)
    best = float("inf")
    for _ in range(7):
        start = time.process_time()
        for _ in range(n):
            await app(request(method), receive, send)
        best = min(best, (time.process_time() - start) / n * 1e6)
    return best


async def main_async(n: int) -> None:
    logging.getLogger("giliran.http").setLevel(logging.WARNING)  # as the bench stacks run
    stacked = ObservedHttp(
        SecurityHeaders(SameOrigin(BodyLimit(bare, 1_000_000), PUBLIC)),
        http_duration(CollectorRegistry()),
    )
    layers: dict[str, ASGIApp] = {
        "bare app": bare,
        "SecurityHeaders": SecurityHeaders(bare),
        "SameOrigin": SameOrigin(bare, PUBLIC),
        "BodyLimit": BodyLimit(bare, 1_000_000),
        "ObservedHttp": ObservedHttp(bare, http_duration(CollectorRegistry())),
        "ProxyHeaders": ProxyHeadersMiddleware(bare, "127.0.0.1"),
        "all five": ProxyHeadersMiddleware(stacked, "127.0.0.1"),
    }
    base = {method: await per_request(bare, method, n) for method in ("POST", "GET")}
    for name, app in layers.items():
        row = []
        for method in ("POST", "GET"):
            spent = await per_request(app, method, n)
            row.append(f"{method} {spent:6.2f} µs (+{spent - base[method]:5.2f})")
        print(f"{name:>16}: " + "  ".join(row))


async def whole_app(n: int, tracing: bool) -> None:
    """A GET through intake's app as `giliran service intake` builds it (no store needed)."""
    if tracing:
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )

        from giliran import telemetry

        class Dropped(SpanExporter):
            def export(self, spans: Any) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(Dropped()))
        trace.set_tracer_provider(provider)  # as configure_tracing installs it
        telemetry.use_tracer_provider(provider)
    from giliran.settings import Settings
    from services.intake.app import build

    logging.disable(logging.WARNING)
    settings = Settings(
        nats_url="nats://127.0.0.1:1",
        mongo_url="mongodb://127.0.0.1:1/?directConnection=true",
        nik_hash_key=SecretStr("bench-nik-hash-key-0123456789abcdefghij"),
        session_key=SecretStr("bench-session-key-0123456789abcdefghij"),
        audit_key=SecretStr("bench-audit-key-of-sufficient-length-0123"),
        catalogue_dir=CATALOGUE,
        demo=True,
    )
    app, _ = build(settings)

    def challenge(method: str) -> dict[str, Any]:
        scope = request("GET")
        scope.update(path="/api/v1/sites/cikarang-utara/challenge", headers=[(b"host", b"x")])
        scope.update(raw_path=scope["path"].encode(), http_version="1.1", state={})
        return scope

    async def one(scope: Scope, receive: Receive, send: Send) -> None:
        await app(challenge("GET"), receive, send)

    spent = await per_request(one, "GET", n)
    print(f"intake app, GET {challenge('GET')['path']}, tracing {'on' if tracing else 'off'}: "
          f"{spent:.0f} µs CPU per request")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--app", action="store_true", help="intake's whole app instead")
    parser.add_argument("--tracing", action="store_true", help="with --app: tracing on")
    args = parser.parse_args()
    if args.app:
        asyncio.run(whole_app(min(args.requests, 2000), args.tracing))
    else:
        asyncio.run(main_async(args.requests))


if __name__ == "__main__":
    main()
