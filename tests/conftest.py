"""Fixtures: a real nats-server and the embedded MongoDB-wire store on free ports, and services."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from giliran.runtime import ServiceRuntime
from giliran.settings import ServiceName, Settings
from giliran_ops.cli import build_service
from giliran_ops.embedded import ManagedProcess, mongo_wire_store, nats_server

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"


@pytest.fixture(scope="session")
def store_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedProcess]:
    """One embedded store for the session; every test gets its own databases (db_prefix)."""
    if os.environ.get("GILIRAN_TEST_MONGO_URL"):
        pytest.skip("using an external store")
    server = mongo_wire_store(tmp_path_factory.mktemp("store")).start()
    asyncio.run(server.wait_listening())
    yield server
    server.stop()


@pytest.fixture
def mongo_url(store_server: ManagedProcess) -> str:
    return os.environ.get(
        "GILIRAN_TEST_MONGO_URL",
        f"mongodb://127.0.0.1:{store_server.port}/?directConnection=true",
    )


@pytest.fixture
def nats_proc(tmp_path: Path) -> Iterator[ManagedProcess]:
    """A fresh nats-server with JetStream per test: no stream or consumer leaks between tests."""
    server = nats_server(tmp_path).start()
    asyncio.run(server.wait_listening())
    yield server
    server.stop()


@pytest.fixture
def settings(nats_proc: ManagedProcess, mongo_url: str) -> Settings:
    return Settings(
        nats_url=f"nats://127.0.0.1:{nats_proc.port}",
        mongo_url=mongo_url,
        db_prefix=f"t{uuid.uuid4().hex[:12]}",
        nik_hash_key=SecretStr("test-nik-hash-key-0123456789abcdefghij"),
        nik_encryption_key=SecretStr("2sklCeVOsLm_1IFPRqUGUAZ211p0OOuLY686SWDloUo="),
        session_key=SecretStr("test-session-key-0123456789abcdefghij"),
        audit_key=SecretStr("test-audit-key-of-sufficient-length-0123"),
        demo=True,
        outbox_poll_seconds=0.2,
        retry_backoff_seconds=[0.1, 0.2, 0.3, 0.5],
        max_deliver=4,
        ticket_wait_seconds=3.0,
    )


@dataclass
class RunningService:
    app: FastAPI
    runtime: ServiceRuntime
    http: httpx.AsyncClient
    # The same app without credentials (what a stranger's requests look like).
    anonymous: httpx.AsyncClient


# The role the test client acts in, at every site: what each service's own tests exercise
# (tests/integration/test_access.py checks who else may or may not).
HARNESS_ROLE: dict[ServiceName, str] = {
    "queue": "supervisor",
    "intake": "admin",
    "notify": "supervisor",
    "reporting": "supervisor",
}


@asynccontextmanager
async def running(name: ServiceName, settings: Settings) -> AsyncIterator[RunningService]:
    """A service in this event loop with its real lifespan (store, bus, consumers, relay); its
    `http` client carries an API token of the service's harness role."""
    from giliran.auth import ALL_SITES, Role

    app, runtime = build_service(name, settings)
    async with app.router.lifespan_context(app):
        await asyncio.wait_for(runtime.bus_started.wait(), timeout=15)
        _, token = await runtime.accounts.issue_token(
            "test-harness", Role(HARNESS_ROLE[name]), ALL_SITES
        )
        transport = httpx.ASGITransport(app=app)
        base = f"http://{name}"
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            httpx.AsyncClient(transport=transport, base_url=base, headers=headers) as client,
            httpx.AsyncClient(transport=transport, base_url=base) as anonymous,
        ):
            yield RunningService(app, runtime, client, anonymous)


@pytest.fixture
def run_service() -> Callable[[ServiceName, Settings], Any]:
    return running


async def eventually(
    check: Callable[[], Awaitable[Any]], *, within: float = 10.0, interval: float = 0.05
) -> Any:
    """Poll until `check` returns a truthy value; fail with its last value after `within` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    last: Any = None
    while loop.time() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {within}s; last value: {last!r}")


@asynccontextmanager
async def nats_client(settings: Settings) -> AsyncIterator[nats.NATS]:
    client = await nats.connect(settings.nats_url)
    try:
        yield client
    finally:
        await client.close()


def request_event(
    services: list[str],
    *,
    site: str = "cikarang-utara",
    session_id: str = "test-session",
    **fields: Any,
) -> Any:
    """A `request.submitted` event as intake would publish it (`fields`: priority,
    appointment_at, arrived, session window, citizen...)."""
    from giliran.contracts import Channel, CitizenRef, RequestSubmitted, new_event, new_id, utcnow

    return new_event(
        RequestSubmitted(
            request_id=new_id(),
            session_id=session_id,
            services=services,
            **{
                "channel": Channel.KIOSK,
                "citizen": CitizenRef(),
                "submitted_at": utcnow(),
                **fields,
            },
        ),
        site=site,
    )


async def publish(settings: Settings, event: Any, *, msg_id: str | None = None) -> None:
    """Publish to JetStream as the outbox relay does; `msg_id` overrides the Nats-Msg-Id."""
    from giliran.bus import ensure_streams, publish_event

    async with nats_client(settings) as client:
        js = client.jetstream()
        await ensure_streams(js)
        payload = event.to_json_dict() if hasattr(event, "to_json_dict") else event
        if msg_id is None:
            await publish_event(js, payload)
        else:
            import json

            subject = (
                event.nats_subject
                if hasattr(event, "nats_subject")
                else "giliran.{}.{}.{}".format(payload["subject"], *payload["type"].split(".")[1:3])
            )
            await js.publish(subject, json.dumps(payload).encode(), headers={"Nats-Msg-Id": msg_id})


async def publish_many(settings: Settings, events: list[Any]) -> None:
    """Publish a burst over one connection (publish() connects per event: too slow for bursts)."""
    from giliran.bus import ensure_streams, publish_event

    async with nats_client(settings) as client:
        js = client.jetstream()
        await ensure_streams(js)
        for event in events:
            await publish_event(js, event.to_json_dict())


@asynccontextmanager
async def serving(app: FastAPI, port: int) -> AsyncIterator[str]:
    """Serve an ASGI app over real HTTP on 127.0.0.1 in this event loop (for the browser)."""
    import uvicorn

    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=1,  # open SSE streams would otherwise hold shutdown for ever
    )
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: _started(server), within=20)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def _started(server: Any) -> bool:
    return bool(server.started)


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def require_chromium() -> None:
    """Browser tests need Debian's chromium (`make test` installs it as root); in CI its absence
    is a failure, elsewhere a skip with the reason."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} missing: .ci/run must install the chromium package")
        pytest.skip(f"{CHROMIUM} missing (apt-get install chromium)")


def require_tools(*names: str) -> None:
    """Debian programs a test reads its output with or drives (espeak-ng, sox, pdftoppm...;
    `make browser` installs them as root): missing in CI is a failure, elsewhere a skip."""
    import shutil

    missing = [name for name in names if shutil.which(name) is None]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"{', '.join(missing)} missing: `make browser` installs them")
        pytest.skip(f"{', '.join(missing)} missing (make browser installs them)")


def service_process(
    name: ServiceName, settings: Settings, log_dir: Path, port: int | None = None
) -> ManagedProcess:
    """A service as its own OS process, to crash it with kill -9 (see giliran_ops.embedded)."""
    from giliran_ops.embedded import service_process as process

    return process(name, settings, log_dir, port=port)


# --- NATS with users and permissions (deploy/nats/giliran.conf) ------------------------------


@dataclass
class SecuredNats:
    """A nats-server running Giliran's users and permissions, and every user's password."""

    process: ManagedProcess
    passwords: dict[str, str]

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.process.port}"

    def settings_for(self, base: Settings, user: str) -> Settings:
        """`base` with this server and `user`'s credentials (a service's own user)."""
        return base.model_copy(
            update={
                "nats_url": self.url,
                "nats_user": user,
                "nats_password": SecretStr(self.passwords[user]),
            }
        )

    async def connect(self, user: str, **options: Any) -> nats.NATS:
        from giliran_ops.natsauth import inbox_prefix

        return await nats.connect(
            self.url,
            user=user,
            password=self.passwords[user],
            inbox_prefix=inbox_prefix(user),
            allow_reconnect=False,
            **options,
        )


@pytest.fixture
def secured_nats(tmp_path: Path) -> Iterator[SecuredNats]:
    """A fresh nats-server per test with the checked-in users and permissions."""
    import secrets

    from giliran.catalogue import load_catalogue
    from giliran.settings import SERVICES
    from giliran_ops.cli import NATS_CONFIG
    from giliran_ops.natsauth import all_users, server_environment

    users = all_users(SERVICES, load_catalogue(Settings().catalogue_dir).sites)
    passwords = {user: secrets.token_urlsafe(32) for user in users}
    env = {**os.environ, **server_environment(passwords)}
    server = nats_server(tmp_path, config=NATS_CONFIG, env=env).start()
    asyncio.run(server.wait_listening())
    yield SecuredNats(server, passwords)
    server.stop()


# --- accounts for tests that drive services over real HTTP or in a browser -------------------


async def add_account(
    settings: Settings, name: str, password: str, role: str, site: str = "cikarang-utara"
) -> None:
    """A person's account in the shared accounts database of `settings`."""
    from giliran.auth import AuthStore, Role
    from giliran.store import connect

    client = connect(settings.mongo_url)
    try:
        await AuthStore(client[settings.auth_database]).add_user(name, password, Role(role), site)
    finally:
        await client.close()


async def issue_token(settings: Settings, role: str, site: str = "*", label: str = "test") -> str:
    """An API token (devices, integrations, test clients) in the shared accounts database."""
    from giliran.auth import AuthStore, Role
    from giliran.store import connect

    client = connect(settings.mongo_url)
    try:
        _, token = await AuthStore(client[settings.auth_database]).issue_token(
            label, Role(role), site
        )
    finally:
        await client.close()
    return token


async def sign_in(page: Any, base_url: str, name: str, password: str, next_url: str) -> None:
    """Sign in through the real login page (CSRF field, session cookie) and land on `next_url`."""
    from urllib.parse import quote

    await page.goto(f"{base_url}/login?next={quote(next_url)}")
    await page.fill("#username", name)
    await page.fill("#password", password)
    async with page.expect_navigation():
        await page.click("#login-submit")
