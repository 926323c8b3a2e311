"""Calendar changes down, against a real nats-server and the embedded store: the hub's intake
puts each admin change on giliran.catalogue.<site>; a site box's intake follows only its own
site's changes and applies them; applying again changes nothing."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from giliran.bus import put_stream
from giliran.settings import Settings
from giliran_ops import edge
from services.intake.admin import Admin, CalendarChange
from services.intake.edge import apply
from tests.conftest import eventually, nats_client, running

pytestmark = pytest.mark.integration
FAIR = "botram-setu"
MSC = "cikarang-utara"


def _ahead(days: int) -> str:
    return (datetime.now(ZoneInfo("Asia/Jakarta")).date() + timedelta(days=days)).isoformat()


async def _catalogue(settings: Settings) -> list[tuple[str, dict[str, object], str]]:
    async with nats_client(settings) as client:
        js = client.jetstream()
        sub = await js.pull_subscribe(f"{edge.CATALOGUE_PREFIX}.*", stream=edge.CATALOGUE_STREAM)
        found = []
        try:
            for message in await sub.fetch(50, timeout=1.0):
                headers = message.headers or {}
                found.append((message.subject, json.loads(message.data), headers["Nats-Msg-Id"]))
                await message.ack()
        except TimeoutError:
            pass
        return found


async def test_hub_sends_changes_down_and_a_site_applies_only_its_own(settings: Settings) -> None:
    # One nats-server stands in for both ends here (the leaf link is tests/e2e/test_edge.py):
    # the site's follower reads the hub's stream directly.
    async with nats_client(settings) as client:
        await put_stream(client.jetstream(), edge.hub_catalogue_config())
    hub_settings = settings.model_copy(update={"edge_hub": True, "demo": False})
    site_settings = settings.model_copy(
        update={"edge_site": FAIR, "demo": False, "db_prefix": settings.db_prefix + "s"}
    )
    fair_day, closed_day, holiday = _ahead(5), _ahead(6), _ahead(9)
    async with running("intake", hub_settings) as hub, running("intake", site_settings) as site:
        added = await hub.http.post(f"/api/v1/admin/sites/{FAIR}/sessions", json={"date": fair_day})
        assert added.status_code == 201, added.text
        closed = await hub.http.put(f"/api/v1/admin/sites/{FAIR}/closed/{closed_day}", json={})
        assert closed.status_code == 200, closed.text
        other = await hub.http.put(f"/api/v1/admin/sites/{MSC}/holidays/{holiday}", json={})
        assert other.status_code == 204, other.text

        sent = await _catalogue(settings)
        assert [(s, c["action"]) for s, c, _ in sent] == [
            (edge.catalogue_subject(FAIR), "add_session"),
            (edge.catalogue_subject(FAIR), "close"),
            (edge.catalogue_subject(MSC), "holiday_add"),
        ]
        assert all(msg_id == change["id"] for _, change, msg_id in sent)

        intake = site.app.state.intake

        async def applied() -> bool:
            found = await intake.overrides(FAIR)
            return {str(d) for d in found.sessions_added} == {fair_day} and {
                str(d) for d in found.closed
            } == {closed_day}

        await eventually(applied, within=15)
        before = await intake.overrides(MSC)
        assert holiday not in {str(d) for d in before.holidays_added}  # another site's change

        # Delivered again (a redelivery, a copy after a reconnect): nothing changes.
        for _, change, _ in sent[:2]:
            await apply(Admin(intake), CalendarChange.model_validate(change))
        again = await intake.overrides(FAIR)
        assert {str(d) for d in again.sessions_added} == {fair_day}
        assert {str(d) for d in again.closed} == {closed_day}
        # What a site applies is not sent anywhere again: only the hub announces.
        async with nats_client(settings) as client:
            info = await client.jetstream().stream_info(edge.CATALOGUE_STREAM)
        assert info.state.messages == len(sent)
