"""Paired devices against the real intake and queue (real NATS, the embedded store, real HTTP):
a counter tablet, a board TV and a kiosk paired by a one-time QR code (decoded with a real
decoder), each limited to what it is; revocation ends a device at once; `/device` keeps only
device tokens (issue 14, finding 9)."""

from __future__ import annotations

import asyncio
import base64
import io
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from html import unescape
from urllib.parse import urlsplit

import httpx
import pytest

from giliran.auth import AuthStore, Role
from giliran.auth.accounts import DeviceKind
from giliran.settings import Settings
from giliran.store import connect
from giliran_ops.cli import build_service
from giliran_ops.embedded import free_port
from tests.conftest import eventually, issue_token, running, serving

pytestmark = pytest.mark.integration

SITE = "cikarang-utara"
ELSEWHERE = "botram-setu"
CSRF = re.compile(r'name="csrf" value="([^"]*)"')


def decode_qr_png(data_uri: str) -> str:
    """The text of the QR code in a PNG data URI, read by zxing-cpp (not by our encoder)."""
    import zxingcpp
    from PIL import Image

    raw = base64.b64decode(data_uri.split(",", 1)[1])
    found = zxingcpp.read_barcodes(Image.open(io.BytesIO(raw)).convert("L"))
    assert len(found) == 1, found
    return str(found[0].text)


def pairing_qr(page: str) -> str:
    match = re.search(r'<img src="(data:image/png;base64,[^"]+)"[^>]*id="pairing-qr"', page)
    assert match, page[:2000]
    return decode_qr_png(match.group(1))


@dataclass
class Office:
    intake: httpx.AsyncClient
    queue: str  # the queue's real HTTP address (server push needs a real server)
    supervisor: dict[str, str]
    settings: Settings


@asynccontextmanager
async def office(settings: Settings) -> AsyncIterator[Office]:
    # The queue over real HTTP: httpx's in-process transport buffers a stream until it ends.
    queue, runtime = build_service("queue", settings)
    async with running("intake", settings) as intake, serving(queue, free_port()) as queue_url:
        await asyncio.wait_for(runtime.bus_started.wait(), timeout=15)
        token = await issue_token(settings, "supervisor", SITE, "supervisor-1")
        yield Office(intake.anonymous, queue_url, {"Authorization": f"Bearer {token}"}, settings)


async def pair(office: Office, kind: str, counter: str = "") -> tuple[str, str]:
    """The supervisor makes a pairing QR code; the device 'scans' it (the decoded link, once).
    Returns the device's cookie and the page it was sent to."""
    made = await office.intake.post(
        "/devices",
        data={"site": SITE, "kind": kind, "counter": counter},
        headers=office.supervisor,
    )
    assert made.status_code == 201, made.text
    link = pairing_qr(made.text)
    assert unescape(link) == link and "/device/pair/" in link
    scanned = await office.intake.get(urlsplit(link).path)
    assert scanned.status_code == 303, scanned.text
    cookie = scanned.cookies["giliran_device"]
    assert "httponly" in scanned.headers["set-cookie"].lower()
    # Once only: the same code again (a photo of the QR code) pairs nothing.
    again = await office.intake.get(urlsplit(link).path)
    assert again.status_code == 410 and "giliran_device" not in again.cookies
    assert again.json()["error"]["message_id"].startswith("Kode pemasangan tidak berlaku")
    return cookie, scanned.headers["location"]


def device(office: Office, cookie: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=office.queue, cookies={"giliran_device": cookie}, timeout=10)


async def submit(office: Office, service: str = "KTP-CETAK") -> None:
    r = await office.intake.post(
        "/api/v1/requests",
        json={"site": SITE, "services": [service], "name": "Siti", "channel": "online"},
    )
    assert r.status_code in (201, 202), r.text


async def test_device_link_keeps_only_device_tokens(settings: Settings) -> None:
    """Issue 14 finding 9: `/device?token=` made a year-long cookie of ANY token. A person's
    token (admin, supervisor, officer, auditor) is refused and no cookie is set; a display or
    kiosk token still sets up its device. (On the old code the admin token got its cookie.)"""
    async with running("intake", settings) as intake:
        for role in ("admin", "supervisor", "officer", "auditor"):
            token = await issue_token(settings, role, SITE if role != "admin" else "*")
            r = await intake.anonymous.get("/device", params={"token": token, "next": "/admin"})
            assert r.status_code == 403, (role, r.status_code)
            assert "giliran_device" not in r.cookies, role
            assert "bukan token perangkat" in r.json()["error"]["message_id"]
        for role in ("display", "kiosk"):
            token = await issue_token(settings, role, SITE)
            r = await intake.anonymous.get("/device", params={"token": token, "next": "/"})
            assert r.status_code == 303 and r.cookies["giliran_device"] == token, role
        # And a person's token planted in the cookie by hand counts for nothing.
        admin = await issue_token(settings, "admin", "*")
        intake.anonymous.cookies.set("giliran_device", admin)
        planted = await intake.anonymous.get("/admin", follow_redirects=False)
        intake.anonymous.cookies.clear()
        assert planted.status_code == 303 and "/login" in planted.headers["location"]


async def test_a_counter_tablet_serves_its_own_counter_only(settings: Settings) -> None:
    async with office(settings) as o:
        cookie, home = await pair(o, "counter", "1")
        assert urlsplit(home).path == "/console" and f"site={SITE}&counter=1" in home
        async with device(o, cookie) as tablet:
            console = await tablet.get(f"/console?site={SITE}&counter=1")
            assert console.status_code == 200, console.text
            csrf = re.search(r'"csrf":\s*"([^"]+)"', console.text) or CSRF.search(console.text)
            assert csrf, "the console page embeds the device's CSRF token"
            token = {"X-CSRF-Token": csrf.group(1)}
            base = f"/api/v1/sites/{SITE}/counters"
            await submit(o)
            # The cookie alone is not enough for an action: the page's token must come too.
            refused = await tablet.post(f"{base}/1/call-next")
            assert refused.status_code == 403 and refused.json()["error"]["code"] == "csrf_rejected"
            called = await eventually(
                lambda: _called(tablet, f"{base}/1/call-next", token), within=15
            )
            ticket = called["ticket"]
            assert ticket["counter"] == "1"
            # Another counter's console, its actions, and actions naming no counter: refused.
            assert (await tablet.get(f"/console?site={SITE}&counter=2")).status_code == 403
            other = await tablet.post(f"{base}/2/call-next", headers=token)
            assert other.status_code == 403 and "loket '1'" in other.json()["error"]["message_id"]
            by_id = await tablet.post(
                f"/api/v1/tickets/{ticket['ticket_id']}/complete", headers=token
            )
            assert by_id.status_code == 403
            done = await tablet.post(
                f"{base}/1/tickets/{ticket['ticket_id']}/complete", headers=token
            )
            assert done.status_code == 200 and done.json()["ticket"]["status"] == "completed"
            # Another site is another site.
            assert (await tablet.get(f"/api/v1/sites/{ELSEWHERE}/board")).status_code == 403

            # The supervisor revokes it: its very next request is refused.
            listed = await o.intake.get(f"/devices?site={SITE}", headers=o.supervisor)
            token_id = re.search(r'id="device-([0-9a-f]+)"', listed.text)
            assert token_id and "counter-1" in listed.text
            gone = await o.intake.post(f"/devices/{token_id.group(1)}/revoke", headers=o.supervisor)
            assert gone.status_code == 303
            after = await tablet.post(f"{base}/1/call-next", headers=token)
            assert after.status_code == 401
            page = await tablet.get(f"/console?site={SITE}&counter=1")
            assert page.status_code == 303 and "/login" in page.headers["location"]


async def _called(tablet: httpx.AsyncClient, path: str, headers: dict[str, str]) -> object:
    r = await tablet.post(path, headers=headers)
    assert r.status_code in (200, 204), r.text
    return r.json() if r.status_code == 200 else None


async def test_a_board_reads_and_a_revoked_board_gets_nothing_more(settings: Settings) -> None:
    async with office(settings) as o:
        cookie, home = await pair(o, "board")
        assert urlsplit(home).path == "/board" and f"site={SITE}" in home
        async with device(o, cookie) as board:
            assert (await board.get(f"/board?site={SITE}")).status_code == 200
            # A board reads; it never acts, CSRF token or not.
            refused = await board.post(f"/api/v1/sites/{SITE}/counters/1/call-next")
            assert refused.status_code == 401
            async with board.stream("GET", f"/api/v1/sites/{SITE}/board/stream") as stream:
                lines = stream.aiter_lines()
                assert await _next_event(lines) == "event: board"
                listed = await o.intake.get(f"/devices?site={SITE}", headers=o.supervisor)
                token_id = re.search(r'id="device-([0-9a-f]+)"', listed.text)
                assert token_id
                await o.intake.post(f"/devices/{token_id.group(1)}/revoke", headers=o.supervisor)
                await submit(o)  # a change: the stream asks again before sending it
                with pytest.raises(StopAsyncIteration):
                    async with asyncio.timeout(20):
                        while True:
                            line = await lines.__anext__()
                            assert not line.startswith("event:"), "a revoked board got an update"
            assert (await board.get(f"/board?site={SITE}")).status_code == 303


async def _next_event(lines: AsyncIterator[str]) -> str:
    async with asyncio.timeout(10):
        async for line in lines:
            if line.startswith("event:"):
                return line
    raise AssertionError("no event")


async def test_a_paired_kiosk_carries_the_kiosk_role(settings: Settings) -> None:
    async with office(settings) as o:
        cookie, home = await pair(o, "kiosk")
        assert urlsplit(home).path == f"/kiosk/{SITE}"
        o.intake.cookies.set("giliran_device", cookie)
        try:
            page = await o.intake.get(f"/kiosk/{SITE}")
            csrf = CSRF.search(page.text)
            assert page.status_code == 200 and csrf and csrf.group(1)
            taken = await o.intake.post(
                f"/kiosk/{SITE}", data={"service": "KTP-CETAK", "csrf": csrf.group(1)}
            )
            assert taken.status_code == 303 and "/kiosk/ticket/" in taken.headers["location"]
        finally:
            o.intake.cookies.clear()
        client = connect(settings.mongo_url)
        try:
            found = await AuthStore(client[settings.auth_database]).devices(SITE)
        finally:
            await client.close()
        kiosk = next(d for d in found if d["device"] == DeviceKind.KIOSK)
        assert kiosk["role"] == Role.KIOSK.value and kiosk["paired_at"]


async def test_pairing_is_for_a_sites_own_keepers(settings: Settings) -> None:
    async with office(settings) as o:
        form = {"site": SITE, "kind": "board"}
        # Officers, boards and strangers pair nothing; a supervisor of another site neither.
        officer = await issue_token(settings, "officer", SITE)
        r = await o.intake.post(
            "/devices", data=form, headers={"Authorization": f"Bearer {officer}"}
        )
        assert r.status_code == 403
        assert (await o.intake.post("/devices", data=form)).status_code == 401
        elsewhere = await issue_token(settings, "supervisor", ELSEWHERE)
        other = {"Authorization": f"Bearer {elsewhere}"}
        r = await o.intake.post("/devices", data=form, headers=other)
        assert r.status_code == 403 and ELSEWHERE in r.json()["error"]["message_en"]
        # A counter that is not the site's, or a counter tablet without its counter: 422.
        for counter in ("99", ""):
            r = await o.intake.post(
                "/devices",
                data={"site": SITE, "kind": "counter", "counter": counter},
                headers=o.supervisor,
            )
            assert r.status_code == 422, counter
        # Another site's supervisor cannot revoke this site's devices, nor see them.
        await pair(o, "board")
        listed = await o.intake.get(f"/devices?site={SITE}", headers=o.supervisor)
        token_id = re.search(r'id="device-([0-9a-f]+)"', listed.text)
        assert token_id
        r = await o.intake.post(f"/devices/{token_id.group(1)}/revoke", headers=other)
        assert r.status_code == 403
        assert (await o.intake.get(f"/devices?site={SITE}", headers=other)).status_code == 403
        # An expired code pairs nothing; a guessed one neither.
        client = connect(settings.mongo_url)
        try:
            store = AuthStore(client[settings.auth_database])
            from datetime import timedelta

            _, stale = await store.start_pairing(
                DeviceKind.BOARD, SITE, "stale", lifetime=timedelta(seconds=-1)
            )
        finally:
            await client.close()
        assert (await o.intake.get(f"/device/pair/{stale}")).status_code == 410
        listed = await o.intake.get(f"/devices?site={SITE}", headers=o.supervisor)
        assert "kode kedaluwarsa" in listed.text  # the page says the stale code is dead
        assert (await o.intake.get("/device/pair/AAAAAAAAAAAAAAAA")).status_code == 410
