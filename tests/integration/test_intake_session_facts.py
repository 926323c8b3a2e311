"""Session facts kept in process (ADR 0176) against two real intake instances on one embedded
store and a real nats-server: a date an admin closes through ONE instance is refused by the
other within SESSION_FACTS_SECONDS, at once by the instance that made the change, and whatever the
stale instance admitted meanwhile is cancelled by the second sweep."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from giliran.settings import Settings
from services.intake.store import SESSION_FACTS_SECONDS
from tests.conftest import eventually, running
from tests.integration.test_intake_admin import admin_settings  # noqa: F401 (fixture)
from tests.integration.test_intake_registration import ADMIN, SITE, at, body

pytestmark = pytest.mark.integration
# Saturday 5 December, 19:00 WIB: online registration for Sunday 6 December is open.
SATURDAY_19_WIB = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
SUNDAY = "cikarang-utara-20261206"


async def test_a_date_closed_on_one_instance_is_refused_by_the_other_within_the_bound(
    admin_settings: Settings,  # noqa: F811
) -> None:
    async with (
        running("intake", admin_settings) as one,
        running("intake", admin_settings) as other,
    ):
        at(one, SATURDAY_19_WIB)
        at(other, SATURDAY_19_WIB)
        # Both instances have read the calendar (their caches hold Sunday as open).
        for n, svc in enumerate((one, other), start=1):
            r = await svc.http.post("/api/v1/requests", json=body(n, session_id=SUNDAY))
            assert r.status_code == 202, r.text
        closed = await one.http.put(
            f"/api/v1/admin/sites/{SITE}/closed/2026-12-06", json={"note": "banjir"}, headers=ADMIN
        )
        assert closed.json()["requests_cancelled"] == 2
        closed_at = asyncio.get_running_loop().time()
        # The instance that made the change refuses at once: its own write replaced its cache.
        refused = await one.http.post("/api/v1/requests", json=body(3, session_id=SUNDAY))
        assert refused.status_code == 422, refused.text

        # The other may still admit for a moment, never beyond the bound.
        admitted: list[str] = []
        n = 10
        while True:
            n += 1
            r = await other.http.post("/api/v1/requests", json=body(n, session_id=SUNDAY))
            if r.status_code == 422:
                break
            assert r.status_code == 202, r.text
            admitted.append(r.json()["request_id"])
            await asyncio.sleep(0.1)
        assert asyncio.get_running_loop().time() - closed_at <= SESSION_FACTS_SECONDS + 1.0
        assert r.json()["error"]["code"] == "session_not_bookable"

        # What it admitted meanwhile does not stay: the second sweep cancels it.
        async def all_cancelled() -> bool:
            for request_id in admitted:
                got = await one.http.get(f"/api/v1/requests/{request_id}")
                if got.json()["cancelled"] is not True:
                    return False
            return True

        await eventually(all_cancelled, within=SESSION_FACTS_SECONDS + 10)


async def test_a_reopened_date_and_a_new_session_are_offered_at_once_by_the_changing_instance(
    admin_settings: Settings,  # noqa: F811
) -> None:
    """The cache never hides this instance's own change: closed, reopened, registered."""
    async with running("intake", admin_settings) as svc:
        at(svc, SATURDAY_19_WIB)
        url = f"/api/v1/admin/sites/{SITE}/closed/2026-12-06"
        assert (await svc.http.put(url, json={}, headers=ADMIN)).status_code == 200
        refused = await svc.http.post("/api/v1/requests", json=body(1, session_id=SUNDAY))
        assert refused.status_code == 422
        assert (await svc.http.delete(url, headers=ADMIN)).status_code == 200
        again = await svc.http.post("/api/v1/requests", json=body(1, session_id=SUNDAY))
        assert again.status_code == 202, again.text
