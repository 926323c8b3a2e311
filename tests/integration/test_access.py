"""Who may do what: every role (and a stranger, another site's staff, a revoked token) against
every protected endpoint of the four services, as a table; plus CSRF, session fixation, token
revocation and the open ops endpoints."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from giliran.auth import ALL_SITES, Role
from giliran.settings import ServiceName, Settings
from tests.conftest import RunningService, eventually, publish, request_event, running

pytestmark = pytest.mark.integration

SITE = "cikarang-utara"
ELSEWHERE = "botram-setu"

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
    "officer@elsewhere": (Role.OFFICER, ELSEWHERE),
    "supervisor@elsewhere": (Role.SUPERVISOR, ELSEWHERE),
}
EVERYONE = frozenset(WHO) - {"anonymous", "revoked"}


@dataclass(frozen=True)
class Row:
    service: ServiceName
    method: str
    path: str
    allowed: frozenset[str]
    page: bool = False  # a page: strangers are sent to /login (303) instead of a 401
    body: Any = None


def rows(ticket: str, request: str) -> list[Row]:
    s = f"/api/v1/sites/{SITE}"
    officers = frozenset({"officer", "supervisor"})
    operators = frozenset({"supervisor", "admin", "supervisor@elsewhere"})
    readers = frozenset({"supervisor", "auditor", "admin"})
    return [
        # --- queue: counter actions for officers and supervisors of the site ---------------
        Row("queue", "POST", f"{s}/counters/1/call-next", officers),
        Row("queue", "POST", f"{s}/counters/2/open", officers),
        Row("queue", "POST", f"{s}/counters/2/pause", officers),
        Row("queue", "GET", f"{s}/counters/1", officers),
        Row("queue", "POST", f"{s}/counters/1/tickets/{ticket}/recall", officers),
        Row("queue", "POST", f"{s}/tickets/{ticket}/recheck-in", officers),
        Row("queue", "POST", f"/api/v1/tickets/{ticket}/complete", officers),
        Row("queue", "GET", f"/api/v1/tickets/{ticket}", EVERYONE - {"display"}),
        Row(
            "queue",
            "GET",
            f"{s}/requests/{request}",
            EVERYONE - {"officer@elsewhere", "supervisor@elsewhere"},
        ),
        Row("queue", "GET", f"{s}/board", EVERYONE - {"officer@elsewhere", "supervisor@elsewhere"}),
        Row("queue", "GET", f"/console?site={SITE}&counter=1", officers, page=True),
        Row(
            "queue",
            "GET",
            f"/board?site={SITE}",
            EVERYONE - {"officer@elsewhere", "supervisor@elsewhere"},
            page=True,
        ),
        Row("queue", "GET", "/api/v1/audit", frozenset({"auditor", "admin"})),
        Row("queue", "GET", "/audit", frozenset({"auditor", "admin"}), page=True),
        # --- intake: admin API and page for admins; a request by id for staff -------------
        Row("intake", "GET", f"/api/v1/admin/sites/{SITE}/sessions", frozenset({"admin"})),
        Row(
            "intake",
            "PUT",
            f"/api/v1/admin/sites/{SITE}/holidays/2026-12-24",
            frozenset({"admin"}),
            body={"note": "x"},
        ),
        Row("intake", "GET", "/admin", frozenset({"admin"}), page=True),
        # --- intake: the devices page (pairing, revoking) for a site's supervisors --------
        Row(
            "intake", "GET", f"/devices?site={SITE}", frozenset({"supervisor", "admin"}), page=True
        ),
        # The site is in the form (checked after sign-in) or the device's own: 422 / 404 here.
        Row("intake", "POST", "/devices", operators),
        Row("intake", "POST", "/devices/0123456789ab/revoke", operators),
        Row(
            "intake",
            "GET",
            f"/api/v1/requests/{request}",
            frozenset({"officer", "supervisor", "admin"}),
        ),
        # --- notify: the delivery log and retries for supervisors and admins --------------
        Row("notify", "GET", f"/api/v1/deliveries?site={SITE}", frozenset({"supervisor", "admin"})),
        Row(
            "notify",
            "GET",
            f"/api/v1/deliveries/summary?site={SITE}",
            frozenset({"supervisor", "admin"}),
        ),
        Row("notify", "POST", "/api/v1/deliveries/nosuch/retry", operators),
        Row("notify", "GET", "/operator", operators, page=True),
        # --- reporting: figures and exports for supervisors, auditors, admins -------------
        Row("reporting", "GET", f"{s}/summary?date=2026-11-29", readers),
        Row("reporting", "GET", f"{s}/export.csv?from=2026-11-01&to=2026-11-29", readers),
        Row("reporting", "GET", f"{s}/live", readers),
        Row("reporting", "GET", "/api/v1/kabupaten/summary?date=2026-11-29", frozenset({"admin"})),
        Row("reporting", "GET", f"{s}/history?from=2026-11-01&to=2026-11-29", readers),
        Row("reporting", "GET", "/api/v1/kabupaten/history", frozenset({"admin"})),
        Row("reporting", "GET", f"/history/site?site={SITE}", readers, page=True),
        Row("reporting", "GET", "/history/kabupaten", frozenset({"admin"}), page=True),
        Row("reporting", "GET", f"/dashboard?site={SITE}", readers, page=True),
        Row("reporting", "GET", f"/reports/daily?site={SITE}&date=2026-11-29", readers, page=True),
        # --- every service: its dead letters, for the engineers on call and auditors -------
        *(
            Row(name, "GET", "/ops/dead-letters", frozenset({"admin", "auditor"}))
            for name in ("queue", "intake", "notify", "reporting")
        ),
    ]


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


async def ask(svc: RunningService, row: Row, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return await svc.anonymous.request(row.method, row.path, headers=headers, json=row.body)


@pytest.mark.parametrize("service", ["queue", "intake", "notify", "reporting"])
async def test_every_role_against_every_protected_endpoint(
    settings: Settings, service: ServiceName
) -> None:
    ticket, request = "01NOSUCHTICKET", "01NOSUCHREQUEST"
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
        keys = await tokens(svc)
        table = [r for r in rows(ticket, request) if r.service == service]
        assert table
        failures = []
        for row in table:
            for who in WHO:
                answer = await ask(svc, row, keys[who])
                want = expected(row, who)
                got = answer.status_code
                ok = got not in (401, 403) if want is None else got == want
                if ok and want in (401, 403):
                    problem = answer.json()["error"]
                    # Bilingual: Bahasa Indonesia first, English too, and not the same text.
                    ok = (
                        bool(problem["message_id"])
                        and problem["message_id"] != problem["message_en"]
                    )
                if ok and want == 303:
                    ok = answer.headers["location"].startswith("/login?next=")
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
