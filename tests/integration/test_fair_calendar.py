"""The fair's calendar and the holiday policy against a real nats-server and the embedded store:
a kabupaten admin's BOTRAM plan for a quarter, edited and published to the venues' sites (and,
from a hub, down to a site box); the MSC Lebaran closure told to citizens and lifted by an admin;
and who may not touch a fair's plan."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import SecretStr

from giliran.bus import put_stream
from giliran.settings import Settings
from giliran_ops import edge
from services.intake.admin import Admin
from tests.conftest import eventually, issue_token, nats_client, running
from tests.integration.test_intake_registration import at, bus_events, nik

pytestmark = pytest.mark.integration
# Monday 7 December 2026, 10:00 WIB: the next quarter is 2027Q1.
MONDAY = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
PLAN = "/api/v1/admin/fairs/botram/plan"


@pytest.fixture
def hub_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "ticket_wait_seconds": 0.0,
            "demo": False,
            "admin_token": SecretStr("fair-calendar-admin-token-0123456789"),
        }
    )


def _venue(entries: list[dict[str, object]], day: str) -> object:
    return next(e for e in entries if e["date"] == day)["venue"]


async def test_a_quarter_is_planned_edited_published_and_sent_down(hub_settings: Settings) -> None:
    async with nats_client(hub_settings) as client:
        await put_stream(client.jetstream(), edge.hub_catalogue_config())
    hub = hub_settings.model_copy(update={"edge_hub": True})
    async with running("intake", hub) as svc:
        at(svc, MONDAY)
        plan = await svc.http.get(PLAN, params={"quarter": "2027Q1"})
        assert plan.status_code == 200, plan.text
        entries = plan.json()
        assert len(entries) == 13 and entries[0]["date"] == "2027-01-02"
        lebaran = next(e for e in entries if e["date"] == "2027-03-13")
        assert lebaran["venue"] is None and "Idul Fitri" in lebaran["note_id"]
        assert not any(e["published"] for e in entries)

        # Move 9 January to Setu; drop 16 January.
        moved = await svc.http.put(f"{PLAN}/2027-01-09", json={"venue": "setu"})
        assert moved.status_code == 200, moved.text
        dropped = await svc.http.put(f"{PLAN}/2027-01-16", json={"venue": None})
        assert dropped.status_code == 200
        entries = dropped.json()
        assert _venue(entries, "2027-01-09") == "setu" and _venue(entries, "2027-01-16") is None

        done = await svc.http.post(f"{PLAN}/publish", params={"quarter": "2027Q1"})
        assert done.status_code == 200, done.text
        opened = {o["date"]: o["venue"] for o in done.json()["opened"]}
        assert opened["2027-01-09"] == "setu" and "2027-01-16" not in opened
        assert len(opened) == 11  # 13 weeks less Lebaran and the dropped one
        # The venue's site now has that fair day; the rotation's original venue has none.
        setu = await svc.http.get("/api/v1/sites/botram-setu/sessions", params={"days": 40})
        assert "2027-01-09" in [s["date"] for s in setu.json()]
        # Publishing again changes nothing.
        again = await svc.http.post(f"{PLAN}/publish", params={"quarter": "2027Q1"})
        assert again.json()["opened"] == [] and again.json()["withdrawn"] == []
        # Each fair day went down to its venue's site box on the hub's catalogue stream.
        async with nats_client(hub_settings) as client:
            info = await client.jetstream().stream_info(edge.CATALOGUE_STREAM)
        assert info.state.messages == 11
        audit = await svc.runtime.audit.records.count_documents({"action": "fair_publish"})
        assert audit == 2


async def test_moving_a_published_day_withdraws_it_and_tells_registrants(
    hub_settings: Settings,
) -> None:
    async with (
        running("intake", hub_settings) as svc,
        bus_events(hub_settings, "giliran.botram-setu.request.cancelled") as cancelled,
    ):
        at(svc, MONDAY)
        await svc.http.put(f"{PLAN}/2026-12-19", json={"venue": "setu"})
        published = await svc.http.post(f"{PLAN}/publish", params={"quarter": "2026Q4"})
        assert {"date": "2026-12-19", "venue": "setu"} in published.json()["opened"]
        reg = await svc.anonymous.post(
            "/api/v1/requests",
            json={
                "site": "botram-setu",
                "services": ["INFORMASI"],
                "name": "Warga",
                "nik": nik(7),
                "session_id": "botram-setu-20261219",
            },
            headers={"Origin": "http://intake"},
        )
        assert reg.status_code == 202, reg.text
        # The kabupaten moves that Saturday elsewhere: the Setu session is withdrawn.
        await svc.http.put(f"{PLAN}/2026-12-19", json={"venue": "babelan"})
        moved = await svc.http.post(f"{PLAN}/publish", params={"quarter": "2026Q4"})
        assert moved.json()["withdrawn"] == [{"date": "2026-12-19", "venue": "setu"}]
        await eventually(lambda: _async(len(cancelled) == 1), within=15)
        setu = await svc.http.get("/api/v1/sites/botram-setu/sessions", params={"days": 30})
        assert all(s["cancelled"] for s in setu.json() if s["date"] == "2026-12-19")


async def _async(value: bool) -> bool:
    return value


async def test_only_a_kabupaten_admin_plans_a_fair(hub_settings: Settings) -> None:
    async with running("intake", hub_settings) as svc:
        at(svc, MONDAY)
        site_admin = await issue_token(hub_settings, "admin", "botram-setu")
        officer = await issue_token(hub_settings, "officer", "*")
        q = {"quarter": "2027Q1"}
        assert (await svc.anonymous.get(PLAN, params=q)).status_code == 401
        for token in (site_admin, officer):
            auth = {"Authorization": f"Bearer {token}"}
            assert (await svc.anonymous.get(PLAN, params=q, headers=auth)).status_code == 403
            put = await svc.anonymous.put(
                f"{PLAN}/2027-01-09", json={"venue": "setu"}, headers=auth
            )
            assert put.status_code == 403
            publish = await svc.anonymous.post(f"{PLAN}/publish", params=q, headers=auth)
            assert publish.status_code == 403
        # Bad edits: a Sunday, an unknown venue, a past date, a junk quarter, an unknown fair.
        bad_edits = (("2027-01-10", "setu"), ("2027-01-09", "jakarta"), ("2026-11-28", "setu"))
        for day, venue in bad_edits:
            bad = await svc.http.put(f"{PLAN}/{day}", json={"venue": venue})
            assert bad.status_code == 422, (day, bad.text)
            assert bad.json()["error"]["message_id"] and bad.json()["error"]["message_en"]
        assert (await svc.http.get(PLAN, params={"quarter": "2027Q9"})).status_code == 422
        other = await svc.http.get("/api/v1/admin/fairs/msc/plan", params=q)
        assert other.status_code == 422
        # Nothing was changed by any of it.
        plan = (await svc.http.get(PLAN, params=q)).json()
        assert not any(e["edited"] for e in plan)


async def test_lebaran_closes_msc_with_its_reason_and_an_admin_may_open_a_date(
    hub_settings: Settings,
) -> None:
    site = "cikarang-utara"
    async with running("intake", hub_settings) as svc:
        at(svc, datetime(2027, 3, 8, 3, 0, tzinfo=UTC))  # Monday before the break
        closed = await svc.anonymous.get(f"/api/v1/sites/{site}/closed-days", params={"days": 14})
        assert closed.status_code == 200
        by_day = {c["date"]: c for c in closed.json()}
        assert "2027-03-14" in by_day and by_day["2027-03-14"]["weekday_id"] == "Minggu"
        assert "Idul Fitri" in by_day["2027-03-14"]["reason_id"]
        ahead = await svc.anonymous.get(f"/api/v1/sites/{site}/sessions", params={"days": 14})
        assert "2027-03-14" not in [s["date"] for s in ahead.json()]
        booking = await svc.anonymous.post(
            "/api/v1/requests",
            json={
                "site": site,
                "services": ["KTP-CETAK"],
                "name": "Warga",
                "nik": nik(8),
                "session_id": f"{site}-20270314",
            },
            headers={"Origin": "http://intake"},
        )
        assert booking.status_code == 422, booking.text
        # The Camat decides to open that Sunday after all: one date, nothing else.
        opened = await svc.http.delete(f"/api/v1/admin/sites/{site}/closed/2027-03-14")
        assert opened.status_code == 200
        ahead = await svc.anonymous.get(f"/api/v1/sites/{site}/sessions", params={"days": 14})
        assert "2027-03-14" in [s["date"] for s in ahead.json()]
        still = await svc.anonymous.get(f"/api/v1/sites/{site}/closed-days", params={"days": 14})
        assert "2027-03-14" not in [c["date"] for c in still.json()]
        assert "2027-03-15" in [c["date"] for c in still.json()]
        # Closing it again restores the policy's closure.
        await svc.http.put(f"/api/v1/admin/sites/{site}/closed/2027-03-14", json={"note": "mudik"})
        ahead = await svc.anonymous.get(f"/api/v1/sites/{site}/sessions", params={"days": 14})
        assert "2027-03-14" not in [s["date"] for s in ahead.json()]


async def test_the_registration_page_tells_which_dates_are_closed_and_why(
    hub_settings: Settings,
) -> None:
    async with running("intake", hub_settings) as svc:
        at(svc, datetime(2027, 3, 8, 3, 0, tzinfo=UTC))
        page = await svc.anonymous.get("/daftar", params={"site": "cikarang-utara"})
        assert page.status_code == 200
        assert "2027-03-14" in page.text and "Libur Idul Fitri" in page.text
        english = await svc.anonymous.get(
            "/daftar", params={"site": "cikarang-utara", "lang": "en"}
        )
        assert "Eid al-Fitr" in english.text


async def test_the_admin_pages_show_the_plan_and_the_closed_dates(hub_settings: Settings) -> None:
    async with running("intake", hub_settings) as svc:
        at(svc, datetime(2027, 3, 1, 3, 0, tzinfo=UTC))
        plan = await svc.http.get("/admin/fairs/botram", params={"quarter": "2027Q1"})
        assert plan.status_code == 200, plan.text
        assert 'data-date="2027-03-13"' in plan.text and "Idul Fitri" in plan.text
        assert "Tambun Selatan" in plan.text and 'id="publish"' in plan.text
        admin = await svc.http.get("/admin", params={"site": "cikarang-utara"})
        assert admin.status_code == 200
        assert 'data-date="2027-03-14"' in admin.text and "Buka tetap" in admin.text
        assert 'href="/admin/fairs/botram"' in admin.text


async def test_the_plan_page_opens_on_the_quarter_of_the_date_in_wib(
    hub_settings: Settings,
) -> None:
    """00:30 WIB on 1 January 2027 is still 31 December in UTC: the page must open on 2027Q1,
    the quarter the admin is now planning, not the one that ended half an hour ago."""
    async with running("intake", hub_settings) as svc:
        at(svc, datetime(2026, 12, 31, 17, 30, tzinfo=UTC))
        page = await svc.http.get("/admin/fairs/botram")
        assert page.status_code == 200, page.text
        assert "triwulan 2027Q1" in page.text and 'data-date="2027-01-02"' in page.text


async def test_a_cuti_bersama_the_admin_adds_closes_msc_like_one_the_package_knows(
    hub_settings: Settings,
) -> None:
    """Each year's cuti bersama is decreed after the `holidays` release that estimates the year:
    for 2029 it knows Idul Fitri on Thursday 15 and Friday 16 February, nothing after. The admin
    adds the decreed Monday 19 February with its name. MSC opens on holidays, so without the
    policy reading the corrected calendar it opened on that cuti bersama (and on the Sunday
    between), the days its staff are on leave."""
    site = "cikarang-utara"
    async with running("intake", hub_settings) as svc:
        at(svc, datetime(2029, 2, 12, 3, 0, tzinfo=UTC))  # Monday of the week before
        added = await svc.http.put(
            f"/api/v1/admin/sites/{site}/holidays/2029-02-19",
            json={"note": "Cuti Bersama Hari Raya Idul Fitri"},
        )
        assert added.status_code == 204, added.text
        ahead = await svc.anonymous.get(f"/api/v1/sites/{site}/sessions", params={"days": 14})
        dates = [s["date"] for s in ahead.json()]
        assert "2029-02-18" not in dates and "2029-02-19" not in dates
        assert "2029-02-25" in dates  # the Sunday after the break opens as usual
        closed = await svc.anonymous.get(f"/api/v1/sites/{site}/closed-days", params={"days": 14})
        by_day = {c["date"]: c for c in closed.json()}
        assert "Idul Fitri" in by_day["2029-02-19"]["reason_id"]
        assert by_day["2029-02-18"]["source"] == "policy"
        # A date the package estimates, removed by the admin (the government set Idul Adha
        # 1451 H on another day): Sunday 14 April 2030 is an ordinary Sunday again, and opens.
        at(svc, datetime(2030, 4, 8, 3, 0, tzinfo=UTC))
        before = await svc.anonymous.get(f"/api/v1/sites/{site}/sessions", params={"days": 14})
        assert "2030-04-14" not in [s["date"] for s in before.json()]
        removed = await svc.http.delete(f"/api/v1/admin/sites/{site}/holidays/2030-04-14")
        assert removed.status_code == 204, removed.text
        after = await svc.anonymous.get(f"/api/v1/sites/{site}/sessions", params={"days": 14})
        assert "2030-04-14" in [s["date"] for s in after.json()]


async def test_a_publication_that_died_mid_withdrawal_is_finished_by_the_next(
    hub_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process dies right after a withdrawn day's session is cancelled, before the plan's
    record says so. The kabupaten then puts the day back at that venue and publishes again: the
    venue's session must be open again, not left cancelled under a plan that shows it published.
    (Without the record of the withdrawal begun, the second publication saw nothing to do.)"""
    original = Admin.cancel_session
    crashes = [True]

    async def cancel_then_die(self: Admin, site: str, session_id: str, note: str = "") -> int:
        done = await original(self, site, session_id, note)
        if crashes and crashes.pop():
            raise RuntimeError("process died")  # after the cancellation, before the record
        return done

    async with running("intake", hub_settings) as svc:
        at(svc, MONDAY)
        await svc.http.put(f"{PLAN}/2026-12-19", json={"venue": "setu"})
        await svc.http.post(f"{PLAN}/publish", params={"quarter": "2026Q4"})
        await svc.http.put(f"{PLAN}/2026-12-19", json={"venue": "babelan"})
        monkeypatch.setattr(Admin, "cancel_session", cancel_then_die)
        with pytest.raises(RuntimeError):
            await svc.http.post(f"{PLAN}/publish", params={"quarter": "2026Q4"})
        # Setu's session was cancelled; the kabupaten changes its mind and publishes again.
        await svc.http.put(f"{PLAN}/2026-12-19", json={"venue": "setu"})
        again = await svc.http.post(f"{PLAN}/publish", params={"quarter": "2026Q4"})
        assert again.status_code == 200, again.text
        setu = await svc.http.get("/api/v1/sites/botram-setu/sessions", params={"days": 30})
        (day,) = [s for s in setu.json() if s["date"] == "2026-12-19"]
        assert not day["cancelled"]
        plan = (await svc.http.get(PLAN, params={"quarter": "2026Q4"})).json()
        assert next(e for e in plan if e["date"] == "2026-12-19")["published"]
        # And the other way: dying mid-withdrawal while the day moves on for good.
        crashes.append(True)
        await svc.http.put(f"{PLAN}/2026-12-19", json={"venue": "babelan"})
        with pytest.raises(RuntimeError):
            await svc.http.post(f"{PLAN}/publish", params={"quarter": "2026Q4"})
        done = await svc.http.post(f"{PLAN}/publish", params={"quarter": "2026Q4"})
        assert {"date": "2026-12-19", "venue": "babelan"} in done.json()["opened"]
        babelan = await svc.http.get("/api/v1/sites/botram-babelan/sessions", params={"days": 30})
        assert "2026-12-19" in [s["date"] for s in babelan.json() if not s["cancelled"]]
        setu = await svc.http.get("/api/v1/sites/botram-setu/sessions", params={"days": 30})
        assert all(s["cancelled"] for s in setu.json() if s["date"] == "2026-12-19")
