"""Who may do what: every caller (a stranger, a revoked token, each role at this site, at another
site and at every site, a kiosk) against every route of the four services, as a table. The table
is checked against each app's own routes: a protected route without a row, or a route without
a guard that is not declared public, fails the test."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import SecretStr
from starlette.routing import Mount, compile_path

from giliran.auth import ALL_SITES, Role
from giliran.auth.web import Requirement
from giliran.settings import ServiceName, Settings
from giliran_ops.cli import build_service
from tests.conftest import RunningService, eventually, publish, request_event, running

pytestmark = pytest.mark.integration

SITE = "cikarang-utara"
ELSEWHERE = "botram-setu"
THEIR_SESSION = f"{ELSEWHERE}-20261206"

# Who asks: (role, site) of an API token; None is a stranger; "revoked" an officer's token
# revoked before use.
WHO: dict[str, tuple[Role, str] | None] = {
    "anonymous": None,
    "revoked": (Role.OFFICER, SITE),
    "admin": (Role.ADMIN, ALL_SITES),
    "supervisor": (Role.SUPERVISOR, SITE),
    "officer": (Role.OFFICER, SITE),
    "display": (Role.DISPLAY, SITE),
    "auditor": (Role.AUDITOR, SITE),
    "kiosk": (Role.KIOSK, SITE),
    "admin@elsewhere": (Role.ADMIN, ELSEWHERE),
    "officer@elsewhere": (Role.OFFICER, ELSEWHERE),
    "supervisor@elsewhere": (Role.SUPERVISOR, ELSEWHERE),
    "auditor@elsewhere": (Role.AUDITOR, ELSEWHERE),
    "display@elsewhere": (Role.DISPLAY, ELSEWHERE),
    "supervisor@all": (Role.SUPERVISOR, ALL_SITES),
}

# Who may, per kind of route (callers of `*` act at every site, `SITE` included).
OFFICERS = frozenset({"officer", "supervisor", "supervisor@all"})
TICKET_READERS = OFFICERS | {"admin", "auditor"}
REQUEST_READERS = OFFICERS | {"admin"}
BOARD = TICKET_READERS | {"display"}
ADMINS = frozenset({"admin"})
# The trail and the dead letters name no site in the path; a site's auditor or admin reads
# its own site's records (the dead letters carry no content, and verify only says ok/broken).
AUDITORS = frozenset({"admin", "auditor", "admin@elsewhere", "auditor@elsewhere"})
OPERATORS = frozenset({"supervisor", "admin", "supervisor@all"})
READERS = frozenset({"supervisor", "auditor", "admin", "supervisor@all"})
KABUPATEN = frozenset({"admin", "supervisor@all"})
NOBODY: frozenset[str] = frozenset()

# Routes nobody signs in for, on purpose (docs/security.md, roles).
OPEN_EVERYWHERE = {
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/login"),
    ("POST", "/login"),
    ("GET", "/device"),
    ("POST", "/logout"),
    ("GET", "/static"),
}
PUBLIC: dict[ServiceName, set[tuple[str, str]]] = {
    "queue": set(),
    # Delivery reports from gateways: each signed by the gateway (ADR 0131), no account.
    "notify": {("POST", "/receipts/{channel}/{site}"), ("GET", "/receipts/{channel}/{site}")},
    "reporting": set(),
    "intake": {
        ("POST", "/api/v1/requests"),
        ("GET", "/api/v1/status/{token}"),
        ("GET", "/api/v1/status/{token}/stream"),
        ("POST", "/api/v1/feedback"),
        ("GET", "/api/v1/sites/{site}/services"),
        ("GET", "/api/v1/sites/{site}/sessions"),
        ("GET", "/api/v1/sites/{site}/sessions/{session_id}/slots"),
        ("GET", "/api/v1/sites/{site}/closed-days"),
        ("POST", "/api/v1/requests/resend-link"),
        ("GET", "/api/v1/sites/{site}/challenge"),
        ("GET", "/jadwal/{site}"),
        ("GET", "/kirim-ulang"),
        ("POST", "/kirim-ulang"),
        ("GET", "/device/pair/{code}"),
        ("GET", "/"),
        ("GET", "/daftar"),
        ("POST", "/daftar"),
        ("GET", "/kiosk/ticket/{token}"),
        ("GET", "/s/{token}"),
        ("GET", "/survey/{token}/{ticket_id}"),
        ("POST", "/survey/{token}/{ticket_id}"),
    },
}


@dataclass(frozen=True)
class Row:
    service: ServiceName
    method: str
    path: str
    allowed: frozenset[str]
    page: bool = False  # a page: strangers are sent to /login (303) instead of a 401
    body: Any = None
    form: dict[str, str] | None = None  # a form post (the site comes from its body)
    stream: bool = False  # server push: only the answer's status is read


def rows(ticket: str, request: str, delivery: str) -> list[Row]:
    s = f"/api/v1/sites/{SITE}"
    a = f"/api/v1/admin/sites/{SITE}"
    period = "from=2026-11-01&to=2026-11-29"
    own_session = f"{SITE}-20261206"
    return [
        # --- queue: counter actions for officers and supervisors of the site ---------------
        Row("queue", "POST", f"{s}/counters/1/call-next", OFFICERS),
        Row("queue", "POST", f"{s}/counters/2/open", OFFICERS),
        Row("queue", "POST", f"{s}/counters/2/pause", OFFICERS),
        # Another site's session in the body: nobody, whatever the path's site.
        Row("queue", "POST", f"{s}/counters/3/open", NOBODY, body={"session_id": THEIR_SESSION}),
        Row("queue", "GET", f"{s}/counters/1", OFFICERS),
        Row("queue", "POST", f"{s}/counters/1/tickets/{ticket}/recall", OFFICERS),
        Row("queue", "POST", f"{s}/tickets/{ticket}/recheck-in", OFFICERS),
        # No site in the path: the ticket's own site decides.
        Row("queue", "POST", f"/api/v1/tickets/{ticket}/complete", OFFICERS),
        Row("queue", "GET", f"/api/v1/tickets/{ticket}", TICKET_READERS),
        # A request's tickets carry their priority reason: no display, no kiosk.
        Row("queue", "GET", f"{s}/requests/{request}", REQUEST_READERS),
        Row("queue", "GET", f"{s}/board", BOARD),
        Row("queue", "GET", f"{s}/board/stream", BOARD, stream=True),
        # The spoken call a board plays (a ticket not yet called: 404 for those who may ask).
        Row("queue", "GET", f"{s}/calls/{ticket}/announcement.wav", BOARD),
        Row("queue", "GET", f"/console?site={SITE}&counter=1", OFFICERS, page=True),
        Row("queue", "GET", f"/board?site={SITE}", BOARD, page=True),
        # --- intake: admin API and page for admins of the site; a request by id for staff ----
        Row("intake", "GET", f"{a}/sessions", ADMINS),
        Row("intake", "POST", f"{a}/sessions", ADMINS, body={"date": "2026-12-26"}),
        Row("intake", "POST", f"{a}/sessions/{own_session}/cancel", ADMINS, body={"note": "x"}),
        Row("intake", "PUT", f"{a}/holidays/2026-12-24", ADMINS, body={"note": "x"}),
        Row("intake", "DELETE", f"{a}/holidays/2026-12-24", ADMINS),
        Row("intake", "PUT", f"{a}/closed/2026-12-27", ADMINS, body={"note": "x"}),
        Row("intake", "DELETE", f"{a}/closed/2026-12-27", ADMINS),
        Row("intake", "GET", f"{a}/sessions/{own_session}/quotas", ADMINS),
        Row("intake", "PUT", f"{a}/sessions/{own_session}/quotas", ADMINS, body={"quotas": {}}),
        # An admin of another site gets the page of their own site.
        Row("intake", "GET", "/admin", ADMINS | {"admin@elsewhere"}, page=True),
        Row(
            "intake",
            "POST",
            "/admin/action",
            ADMINS,
            form={"site": SITE, "what": "holiday_add", "day": "2026-12-31", "note": "x"},
        ),
        # --- intake: the devices page (pairing, revoking) for a site's supervisors and admins -
        Row("intake", "GET", f"/devices?site={SITE}", OPERATORS, page=True),
        Row("intake", "POST", "/devices", OPERATORS, form={"site": SITE, "kind": "board"}),
        # No such device: its site is unknown, so every keeper gets as far as the 404.
        Row(
            "intake",
            "POST",
            "/devices/0123456789ab/revoke",
            OPERATORS | {"supervisor@elsewhere", "admin@elsewhere"},
        ),
        Row("intake", "GET", f"/api/v1/requests/{request}", REQUEST_READERS),
        # Check-in marks a citizen arrived: only at the office, by the site's kiosk or staff.
        Row(
            "intake",
            "POST",
            f"{s}/check-in",
            OFFICERS | {"kiosk", "admin"},
            body={"code": "ZZZZZZ"},
        ),
        # --- intake: the kiosk pages, for the site's kiosk only ------------------------------
        Row("intake", "GET", f"/kiosk/{SITE}", frozenset({"kiosk"}), page=True),
        Row("intake", "POST", f"/kiosk/{SITE}", frozenset({"kiosk"}), page=True, form={}),
        Row(
            "intake",
            "POST",
            f"/kiosk/{SITE}/check-in",
            frozenset({"kiosk"}),
            page=True,
            form={"code": "ZZZZZZ"},
        ),
        # --- intake: the fair plans, for admins of the whole kabupaten -----------------------
        Row("intake", "GET", "/api/v1/admin/fairs/botram/plan?quarter=2027Q1", ADMINS),
        Row("intake", "PUT", "/api/v1/admin/fairs/botram/plan/2027-01-03", ADMINS, body={}),
        Row("intake", "POST", "/api/v1/admin/fairs/botram/plan/publish?quarter=2027Q1", ADMINS),
        Row("intake", "GET", "/admin/fairs/botram", ADMINS, page=True),
        Row(
            "intake",
            "POST",
            "/admin/fairs/botram/action",
            ADMINS,
            form={"quarter": "2027Q1", "what": "edit", "day": "x"},
        ),
        # --- notify: the delivery log and retries for supervisors and admins ----------------
        Row("notify", "GET", f"/api/v1/deliveries?site={SITE}", OPERATORS),
        Row("notify", "GET", f"/api/v1/deliveries/summary?site={SITE}", OPERATORS),
        # The delivery's own site decides (no site in the path) ...
        Row("notify", "POST", f"/api/v1/deliveries/{delivery}/retry", OPERATORS),
        # ... and in the form, whatever site the form names.
        Row(
            "notify",
            "POST",
            "/operator/retry",
            OPERATORS,
            form={"delivery_id": delivery, "site": ELSEWHERE},
        ),
        # Without a site: each supervisor or admin sees their own site's page.
        Row(
            "notify",
            "GET",
            "/operator",
            OPERATORS | {"supervisor@elsewhere", "admin@elsewhere"},
            page=True,
        ),
        # --- reporting: figures and exports for supervisors, auditors, admins ---------------
        Row("reporting", "GET", f"{s}/summary?date=2026-11-29", READERS),
        Row("reporting", "GET", f"{s}/satisfaction?{period}", READERS),
        Row("reporting", "GET", f"{s}/export.csv?{period}", READERS),
        Row("reporting", "GET", f"{s}/export.xlsx?{period}", READERS),
        Row("reporting", "GET", f"{s}/live", READERS),
        Row("reporting", "GET", f"{s}/live/stream", READERS, stream=True),
        Row("reporting", "GET", f"/charts/{SITE}/waiting.svg", READERS),
        Row("reporting", "GET", f"{s}/history?{period}", READERS),
        Row("reporting", "GET", f"{s}/sessions/{own_session}", READERS),
        Row("reporting", "GET", "/api/v1/kabupaten/summary?date=2026-11-29", KABUPATEN),
        Row("reporting", "GET", "/api/v1/kabupaten/history", KABUPATEN),
        Row("reporting", "GET", f"/history/site?site={SITE}", READERS, page=True),
        Row(
            "reporting",
            "GET",
            f"/history/session?site={SITE}&session={own_session}",
            READERS,
            page=True,
        ),
        Row("reporting", "GET", "/history/kabupaten", KABUPATEN, page=True),
        Row("reporting", "GET", f"/dashboard?site={SITE}", READERS, page=True),
        Row("reporting", "GET", f"/reports/daily?site={SITE}&date=2026-11-29", READERS, page=True),
        # --- every service: the audit trail, and its dead letters for the engineers on call --
        *(
            row
            for name in ("queue", "intake", "notify", "reporting")
            for row in (
                Row(name, "GET", "/ops/dead-letters", AUDITORS),
                Row(name, "GET", "/api/v1/audit", AUDITORS),
                Row(name, "GET", "/api/v1/audit/verify", AUDITORS),
                Row(name, "GET", "/audit", AUDITORS, page=True),
            )
        ),
    ]


# --- the app's own routes --------------------------------------------------------------------


@dataclass(frozen=True)
class Declared:
    method: str
    path: str
    protected: bool
    pattern: re.Pattern[str]


def _guarded(route: Any) -> bool:
    if not isinstance(route, APIRoute):
        return False
    pending = list(route.dependant.dependencies)
    while pending:
        dependency = pending.pop()
        if isinstance(dependency.call, Requirement):
            return True
        pending.extend(dependency.dependencies)
    return False


def declared(app: FastAPI) -> Iterator[Declared]:
    """Every (method, path template) the app serves, included routers flattened."""
    for route in app.routes:
        if isinstance(route, Mount):
            yield Declared("GET", route.path, False, re.compile(re.escape(route.path) + "/.*"))
            continue
        found = (
            [(c.path, c.methods, c.original_route) for c in route.effective_route_contexts()]
            if hasattr(route, "effective_route_contexts")
            else [(getattr(route, "path", ""), getattr(route, "methods", None), route)]
        )
        for path, methods, original in found:
            pattern = compile_path(path)[0]
            for method in sorted((methods or {"GET"}) - {"HEAD"}):
                yield Declared(method, path, _guarded(original), pattern)


def route_of(routes: list[Declared], row: Row) -> Declared | None:
    path = row.path.split("?")[0]
    return next((r for r in routes if r.method == row.method and r.pattern.fullmatch(path)), None)


@pytest.mark.parametrize("service", ["queue", "intake", "notify", "reporting"])
def test_every_route_has_a_row_or_is_declared_public(service: ServiceName) -> None:
    app, _ = build_service(service, Settings(nik_hash_key=SecretStr("k"), demo=True))
    routes = list(declared(app))
    table = [r for r in rows("01T", "01R", "d:console:1") if r.service == service]
    covered = {route_of(routes, row) for row in table}
    assert None not in covered, [r.path for r in table if route_of(routes, r) is None]
    public = OPEN_EVERYWHERE | PUBLIC[service]
    missing = [f"{r.method} {r.path}" for r in routes if r.protected and r not in covered]
    assert not missing, f"protected routes of {service} without a row: {missing}"
    unguarded = [
        f"{r.method} {r.path}"
        for r in routes
        if not r.protected and (r.method, r.path) not in public
    ]
    assert not unguarded, f"routes of {service} with no guard, not declared public: {unguarded}"
    wrongly_public = [
        p for p in PUBLIC[service] if any(r.protected and (r.method, r.path) == p for r in routes)
    ]
    assert not wrongly_public


# --- asking ----------------------------------------------------------------------------------


def expected(row: Row, who: str) -> int | None:
    """None: allowed (any answer but 401/403); else the status the caller must get."""
    if who in row.allowed:
        return None
    if WHO[who] is None or who == "revoked":
        return 303 if row.page else 401
    return 403


async def tokens(svc: RunningService) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for who, spec in WHO.items():
        if spec is None:
            found[who] = None
            continue
        token_id, token = await svc.runtime.accounts.issue_token(who, *spec)
        if who == "revoked":
            await svc.runtime.accounts.revoke_token(token_id)
        found[who] = token
    return found


async def ask(svc: RunningService, row: Row, token: str | None) -> tuple[int, Any]:
    """The answer's status and (for refusals) its JSON body."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if row.stream:
        return await _stream_status(svc.app, row.path, headers)
    answer = await svc.anonymous.request(
        row.method, row.path, headers=headers, json=row.body, data=row.form
    )
    body = answer.json() if answer.status_code in (401, 403) else None
    if answer.status_code == 303:
        body = answer.headers["location"]
    return answer.status_code, body


async def _stream_status(app: FastAPI, target: str, headers: dict[str, str]) -> tuple[int, Any]:
    """Ask for a server-push route in-process and hang up after its first bytes (httpx's
    in-process transport would wait for the end of a stream that never ends)."""
    path, _, query = target.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"host", b"test")]
        + [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 1),
        "server": ("test", 80),
    }
    started: dict[str, Any] = {}
    body = bytearray()
    first_bytes = asyncio.Event()
    hung_up = asyncio.Event()
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await hung_up.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            started.update(message)
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))
            if body or not message.get("more_body"):
                first_bytes.set()

    task = asyncio.create_task(app(scope, receive, send))
    try:
        async with asyncio.timeout(10):
            await first_bytes.wait()
    finally:
        hung_up.set()
        try:
            async with asyncio.timeout(5):
                await task
        except TimeoutError:
            task.cancel()
    status = int(started["status"])
    return status, httpx.Response(status, content=bytes(body)).json() if status in (
        401,
        403,
    ) else None


@pytest.mark.parametrize("service", ["queue", "intake", "notify", "reporting"])
async def test_every_caller_against_every_protected_route(
    settings: Settings, service: ServiceName
) -> None:
    ticket, request, delivery = "01NOSUCHTICKET", "01NOSUCHREQUEST", "nosuch"
    async with running(service, settings) as svc:
        if service == "queue":
            event = request_event(["KTP-REKAM"])
            await publish(settings, event)
            request = event.data.request_id
            found = await eventually(lambda: _tickets(svc, request), within=15)
            ticket = found[0]["ticket_id"]
        elif service == "intake":
            made = await svc.http.post(
                "/api/v1/requests",
                json={"site": SITE, "services": ["KTP-CETAK"], "name": "Warga", "consent": False},
            )
            assert made.status_code in (201, 202), made.text
            request = made.json()["request_id"]
        elif service == "notify":
            # A delivery of SITE (sent: a retry is refused as not retryable, after the guard).
            delivery = "01CAUSE:console:ticket_called"
            await svc.app.state.notify_store.begin(
                {"_id": delivery, "channel": "console", "medium": "console", "site": SITE,
                 "recipient": "****1234", "status": "sent", "template": "ticket_called",
                 "attempts": 1, "cost_units": 0, "created_at": "20261206T020000.000000Z"}
            )  # fmt: skip
        keys = await tokens(svc)
        table = [r for r in rows(ticket, request, delivery) if r.service == service]
        failures = []
        for row in table:
            for who in WHO:
                got, body = await ask(svc, row, keys[who])
                want = expected(row, who)
                ok = got not in (401, 403) if want is None else got == want
                if ok and want in (401, 403):
                    problem = body["error"]
                    # Bilingual: Bahasa Indonesia first, English too, and not the same text.
                    ok = (
                        bool(problem["message_id"])
                        and problem["message_id"] != problem["message_en"]
                    )
                if ok and want == 303:
                    ok = str(body).startswith("/login?next=")
                if not ok:
                    failures.append(
                        f"{who:<22} {row.method} {row.path}: {got}, want {want or 'allowed'}"
                    )
        assert not failures, "\n".join(failures)
        # The ops endpoints stay open to probes and Prometheus.
        for path in ("/healthz", "/readyz", "/metrics"):
            assert (await svc.anonymous.get(path)).status_code == 200, path


async def _tickets(svc: RunningService, request_id: str) -> list[dict[str, Any]]:
    answer = await svc.http.get(f"/api/v1/sites/{SITE}/requests/{request_id}")
    found: list[dict[str, Any]] = answer.json() if answer.status_code == 200 else []
    return found
