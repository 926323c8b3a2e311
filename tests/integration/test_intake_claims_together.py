"""A submit's claims in one store command (ADR 0211), against a real nats-server and the
embedded store, with two intake instances: the last place, a phone over its hourly limit, a NIK
already registered, a flood from one address, a lapsed booking's place, an admin's quota change
seen at once by the other instance, and phone windows counted before the upgrade."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from giliran.settings import Settings
from giliran.store import STORE_COMMANDS, count, instant
from giliran_ops.embedded import ManagedProcess, mongo_wire_store
from services.intake.store import WINDOW_PREFIX
from tests.conftest import RunningService, running

pytestmark = pytest.mark.integration

SITE = "cikarang-utara"
SESSION = "cikarang-utara-20261129"
ADMIN = {"Authorization": "Bearer admin-secret-0123456789abcdefghij"}
SATURDAY_19_WIB = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
SUNDAY_1000_WIB = datetime(2026, 11, 29, 3, 0, tzinfo=UTC)
SUNDAY_1015_WIB = datetime(2026, 11, 29, 3, 15, tzinfo=UTC)
QUOTAS = f"/api/v1/admin/sites/{SITE}/sessions/{SESSION}/quotas"


def nik(n: int) -> str:
    """A valid NIK of Cikarang Utara (32.16.09), distinct per n."""
    return f"321609010190{n:04d}"


def body(n: int, services: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    chosen = services or ["KTP-CETAK"]
    return {"site": SITE, "services": chosen, "name": f"Warga {n}", "nik": nik(n), **extra}


@pytest.fixture
def fast(settings: Settings) -> Settings:
    """No queue runs in these tests: do not wait for tickets."""
    return settings.model_copy(
        update={
            "ticket_wait_seconds": 0.0,
            "admin_token": SecretStr("admin-secret-0123456789abcdefghij"),
        }
    )


@asynccontextmanager
async def two_instances(
    settings: Settings, moment: datetime | None
) -> AsyncIterator[tuple[RunningService, RunningService]]:
    async with AsyncExitStack() as stack:
        pair = [await stack.enter_async_context(running("intake", settings)) for _ in range(2)]
        if moment is not None:
            for svc in pair:
                svc.app.state.intake.clock = lambda: moment
        yield pair[0], pair[1]


@asynccontextmanager
async def client_from(svc: RunningService, address: str) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=svc.app, client=(address, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://intake") as client:
        yield client


async def held(svc: RunningService) -> tuple[int | None, int, int]:
    """KTP-CETAK's (limit, used, remaining) as the admin page shows them."""
    rows = (await svc.http.get(QUOTAS, headers=ADMIN)).json()
    row = next(q for q in rows if q["service"] == "KTP-CETAK")
    return row["limit"], row["used"], row["remaining"]


async def test_two_instances_race_for_the_last_place(fast: Settings) -> None:
    """Many submits at once through two instances, one place left: exactly one wins, and the
    admin page shows it held. Each instance has claimed before, so each claims from memory's
    hint in one command (the path under test), not by the first-use path."""
    settings = fast.model_copy(update={"demo": False})
    async with two_instances(settings, SUNDAY_1000_WIB) as (a, b):
        r = await a.http.put(QUOTAS, json={"quotas": {"KTP-CETAK": 5}}, headers=ADMIN)
        assert r.status_code == 200, r.text
        for n, svc in ((1, a), (2, b), (3, a), (4, b)):
            answer = await svc.http.post("/api/v1/requests", json=body(n))
            assert answer.status_code == 202, answer.text
        answers = await asyncio.gather(
            *(
                (a if n % 2 else b).http.post("/api/v1/requests", json=body(n))
                for n in range(10, 30)
            )
        )
        codes = [x.status_code for x in answers]
        assert codes.count(202) == 1, codes
        assert codes.count(409) == 19, codes
        refused = next(x for x in answers if x.status_code == 409).json()["error"]
        assert refused["code"] == "quota_exhausted"
        assert refused["message_id"] and refused["message_en"]
        assert await held(b) == (5, 5, 0)
        store = a.app.state.intake.store
        assert await count(store.requests, {"session_id": SESSION}) == 5
        # The quota's counters stay whole: a refused claim took nothing, not even for a moment
        # that outlived its request (the budget of counter-minutes is given back too).
        quotas = {d["what"]: d for d in await store.quotas_of(SESSION)}
        assert quotas["KTP-CETAK"]["used"] == 5
        if "budget" in quotas:
            minutes = quotas["budget"]["used"]
            assert minutes % 5 == 0 and minutes > 0


async def test_an_admin_quota_change_applies_at_once_in_the_other_instance(
    fast: Settings,
) -> None:
    """Instance B's hint says "limited"; A makes the quota unlimited: B takes a place at once.
    Then B's hint says "unlimited"; A caps it at what is used: B refuses at once."""
    settings = fast.model_copy(update={"demo": False})
    async with two_instances(settings, SUNDAY_1000_WIB) as (a, b):
        await a.http.put(QUOTAS, json={"quotas": {"KTP-CETAK": 1}}, headers=ADMIN)
        assert (await b.http.post("/api/v1/requests", json=body(1))).status_code == 202
        full = await b.http.post("/api/v1/requests", json=body(2))
        assert full.status_code == 409, full.text
        unlimited = {"quotas": {"KTP-CETAK": None}}
        assert (await a.http.put(QUOTAS, json=unlimited, headers=ADMIN)).status_code == 200
        opened = await b.http.post("/api/v1/requests", json=body(2))
        assert opened.status_code == 202, opened.text
        assert (await b.http.post("/api/v1/requests", json=body(3))).status_code == 202
        await a.http.put(QUOTAS, json={"quotas": {"KTP-CETAK": 3}}, headers=ADMIN)
        capped = await b.http.post("/api/v1/requests", json=body(4))
        assert capped.status_code == 409, capped.text
        assert capped.json()["error"]["code"] == "quota_exhausted"
        assert await held(a) == (3, 3, 0)


async def test_a_lapsed_bookings_place_is_taken_again_through_the_other_instance(
    fast: Settings,
) -> None:
    settings = fast.model_copy(update={"demo": False})
    async with two_instances(settings, SATURDAY_19_WIB) as (a, b):
        await a.http.put(QUOTAS, json={"quotas": {"KTP-CETAK": 2}}, headers=ADMIN)
        booked = await a.http.post(
            "/api/v1/requests",
            json=body(2, session_id=SESSION, appointment_at="2026-11-29T09:30:00+07:00"),
        )
        assert booked.status_code == 202, booked.text
        for svc in (a, b):
            svc.app.state.intake.clock = lambda: SUNDAY_1000_WIB
        assert (await b.http.post("/api/v1/requests", json=body(1))).status_code == 202
        for svc in (a, b):
            svc.app.state.intake.clock = lambda: SUNDAY_1015_WIB
        full = await b.http.post("/api/v1/requests", json=body(3))
        assert full.status_code == 409, full.text
        # The booking was not checked in within its grace: it lapses, and its place goes back
        # (taken through A, given back through A, taken again through B, which claims from its
        # hint in one command: it took a place before).
        assert await a.app.state.intake.lapse_unchecked() == 1
        assert await held(b) == (2, 1, 1)
        again = await b.http.post("/api/v1/requests", json=body(3))
        assert again.status_code == 202, again.text
        assert (await b.http.post("/api/v1/requests", json=body(4))).status_code == 409
        assert await held(a) == (2, 2, 0)


async def test_a_phone_over_its_hourly_limit_is_refused_across_two_instances(
    fast: Settings,
) -> None:
    limited = fast.model_copy(update={"rate_phone_per_hour": 2, "demo": False})
    phone = {"phone": "0812 3456 7890", "consent": True}
    async with two_instances(limited, SUNDAY_1000_WIB) as (a, b):
        answers = await asyncio.gather(
            *(
                (a if n % 2 else b).http.post("/api/v1/requests", json=body(n, **phone))
                for n in range(1, 7)
            )
        )
        codes = sorted(x.status_code for x in answers)
        assert codes == [202] * 2 + [429] * 4, codes
        refused = next(x for x in answers if x.status_code == 429)
        error = refused.json()["error"]
        assert error["code"] == "rate_limited"
        assert "nomor HP ini" in error["message_id"] and "this phone number" in error["message_en"]
        assert 1 <= int(refused.headers["retry-after"]) <= 3600
        # Another phone is not held back by it, on either instance.
        other = {"phone": "0813 1111 2222", "consent": True}
        assert (await b.http.post("/api/v1/requests", json=body(9, **other))).status_code == 202
        # A refused submit took no place: only the two accepted and the other phone's hold one.
        store = a.app.state.intake.store
        assert await count(store.requests, {}) == 3


async def test_phone_windows_counted_before_the_upgrade_still_count(fast: Settings) -> None:
    """A phone's hits in `rate_windows` (intake before ADR 0211) in a window still open when an
    instance starts are added to what is counted with the quotas now: no second allowance."""
    limited = fast.model_copy(update={"rate_phone_per_hour": 2})
    phone = {"phone": "0812 3456 7890", "consent": True}
    if (seconds := datetime.now(UTC).timestamp() % 3600) > 3590:  # the hour is turning
        await asyncio.sleep(3601 - seconds)
    async with running("intake", limited) as first:
        intake = first.app.state.intake
        now = intake.clock()
        start = int(now.timestamp()) // 3600 * 3600
        window = f"{WINDOW_PREFIX}{intake._keyed('+6281234567890')}|{start}"
        await intake.store.rates.insert_one(
            {"_id": window, "n": 1, "expires_at": instant(now + timedelta(hours=2))}
        )
    async with two_instances(limited, None) as (a, b):
        assert (await a.http.post("/api/v1/requests", json=body(1, **phone))).status_code == 202
        over = await b.http.post("/api/v1/requests", json=body(2, **phone))
        assert over.status_code == 429, over.text
        assert "nomor HP ini" in over.json()["error"]["message_id"]
        # Two windows later the windows are forgotten, the old and the new; the quotas stay.
        store = a.app.state.intake.store
        later = a.app.state.intake.clock() + timedelta(hours=3)
        assert await store.forget_rates(later) >= 2
        assert await store.quotas.find_one({"_id": {"$regex": "^phone:"}}) is None
        assert await store.rates.find_one({"_id": window}) is None
        assert [q["what"] for q in await store.quotas.find({}).to_list()] == ["KTP-CETAK"]


async def test_a_nik_already_registered_is_refused_through_the_other_instance(
    fast: Settings,
) -> None:
    """Nothing of the first request is shown; with the quota also full, the NIK's refusal is
    still the answer (as when places were claimed last)."""
    settings = fast.model_copy(update={"demo": False})
    async with two_instances(settings, SUNDAY_1000_WIB) as (a, b):
        await a.http.put(QUOTAS, json={"quotas": {"KTP-CETAK": 1}}, headers=ADMIN)
        contact = {"phone": "081234567890", "consent": True}
        first = await a.http.post("/api/v1/requests", json=body(1, **contact))
        assert first.status_code == 202, first.text
        again = await b.http.post("/api/v1/requests", json=body(1, name="Orang lain"))
        assert again.status_code == 409, again.text
        assert again.json()["error"]["code"] == "already_registered"
        shown = again.text
        mine = first.json()
        for secret in (mine["request_id"], "Warga 1", "7890", mine["status_page_url"]):
            assert secret not in shown
        assert await held(b) == (1, 1, 0)


async def test_a_flood_from_one_address_is_still_limited(fast: Settings) -> None:
    limited = fast.model_copy(
        update={"rate_limit_exempt": [], "rate_ip_per_minute": 3, "demo": False}
    )
    # A fixed moment: a burst across a minute's boundary would be counted in two windows.
    async with two_instances(limited, SUNDAY_1000_WIB) as (a, b):
        async with client_from(a, "203.0.113.7") as bot_a, client_from(b, "203.0.113.7") as bot_b:
            answers = await asyncio.gather(
                *(
                    (bot_a if n % 2 else bot_b).post("/api/v1/requests", json=body(n))
                    for n in range(1, 9)
                )
            )
        codes = sorted(x.status_code for x in answers)
        assert codes == [202] * 3 + [429] * 5, codes
        assert "alamat ini" in next(x for x in answers if x.status_code == 429).text


async def test_a_submit_counts_its_phone_and_takes_its_place_in_one_command(
    fast: Settings,
) -> None:
    """The point of ADR 0211, counted with PyMongo's command monitoring: once the quota is
    known, a kiosk submit with a phone sends one write for its window and places and one for
    the request (before: a findAndModify on rate_windows and one per place on quotas)."""
    settings = fast.model_copy(update={"demo": False})
    async with running("intake", settings) as svc:
        svc.app.state.intake.clock = lambda: SUNDAY_1000_WIB
        warm = await svc.http.post("/api/v1/requests", json=body(1))
        assert warm.status_code == 202, warm.text
        before = dict(STORE_COMMANDS.counts)
        answer = await svc.http.post(
            "/api/v1/requests", json=body(2, phone="081234567890", consent=True)
        )
        assert answer.status_code == 202, answer.text
        after = dict(STORE_COMMANDS.counts)
    sent = {k: n - before.get(k, 0) for k, n in after.items() if n != before.get(k, 0)}
    writes = {k: n for k, n in sent.items() if k[0] in ("update", "findAndModify", "insert")}
    claims = {k: n for k, n in writes.items() if k[1] in ("quotas", "rate_windows")}
    assert claims == {("update", "quotas"): 1}, sent
    assert writes.get(("insert", "requests")) == 1, sent


async def broken_counter(svc: RunningService, service: str) -> None:
    """Make `service`'s quota a counter the store refuses to `$inc` (a non-numeric `used`): a
    real write error from the real store, standing in for any store failure of that write."""
    store = svc.app.state.intake.store
    await store.quotas.update_one({"_id": f"{SESSION}|{service}"}, {"$set": {"used": "x"}})


async def test_a_store_error_later_in_the_one_command_gives_back_the_places_before_it(
    fast: Settings,
) -> None:
    """Both quotas known to the instance, so the window and both places are ONE ordered
    command; the store applies the window and KTP-CETAK's place, then fails KK-UBAH's with a
    write error that is not a duplicate key. The submit fails (503, bilingual) and KTP-CETAK's
    place must be given back: every place held belongs to a stored request."""
    settings = fast.model_copy(update={"demo": False})
    two = ["KTP-CETAK", "KK-UBAH"]
    async with running("intake", settings) as svc:
        svc.app.state.intake.clock = lambda: SUNDAY_1000_WIB
        quotas = {"quotas": {"KTP-CETAK": 5, "KK-UBAH": 5}}
        assert (await svc.http.put(QUOTAS, json=quotas, headers=ADMIN)).status_code == 200
        ok = await svc.http.post("/api/v1/requests", json=body(1, services=two))
        assert ok.status_code == 202, ok.text
        await broken_counter(svc, "KK-UBAH")
        before = dict(STORE_COMMANDS.counts)
        failed = await svc.http.post(
            "/api/v1/requests",
            json=body(2, services=two, phone="081234567890", consent=True),
        )
        sent = {k: n - before.get(k, 0) for k, n in STORE_COMMANDS.counts.items()}
        assert sent.get(("update", "quotas"), 0) >= 1, sent  # the one command was sent
        assert failed.status_code == 503, failed.text
        error = failed.json()["error"]
        assert error["code"] == "store_unavailable" and "Penyimpanan" in error["message_id"]
        assert "store" in error["message_en"]
        store = svc.app.state.intake.store
        assert await count(store.requests, {"session_id": SESSION}) == 1
        # Mend KK-UBAH's counter for the admin page (its one place, of request 1).
        await store.quotas.update_one({"_id": f"{SESSION}|KK-UBAH"}, {"$set": {"used": 1}})
        assert await held(svc) == (5, 1, 4)


@pytest.fixture
def own_store(tmp_path: Path) -> Iterator[ManagedProcess]:
    """A store of this test alone: the test stops it (SIGSTOP) like a store that hangs."""
    server = mongo_wire_store(tmp_path / "own").start()
    asyncio.run(server.wait_listening())
    yield server
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGCONT)
    server.stop()


async def test_a_store_hanging_while_a_later_place_is_claimed_gives_back_the_one_commands(
    fast: Settings, own_store: ManagedProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """KTP-CETAK's quota is known to the instance (taken in the one command), KK-UBAH's is not
    (claimed after it by `claim_place`). The store hangs right after the one command (SIGSTOP)
    until the client gives that claim up (its timeout), then answers again. The submit fails
    (503) and KTP-CETAK's place, taken by the one command, must be given back, as the code
    before ADR 0211 did: every place held belongs to a stored request."""
    assert own_store.process is not None
    pid = own_store.process.pid
    url = f"mongodb://127.0.0.1:{own_store.port}/?directConnection=true"
    settings = fast.model_copy(update={"demo": False, "mongo_url": url})
    armed = False
    one_command: set[int] = set()
    sending, counted, gave_up = (
        STORE_COMMANDS.started,
        STORE_COMMANDS.succeeded,
        STORE_COMMANDS.failed,
    )

    def started(event: Any) -> None:
        sending(event)
        if armed and event.command_name == "update" and event.command["update"] == "quotas":
            one_command.add(event.request_id)

    def succeeded(event: Any) -> None:
        nonlocal armed
        counted(event)
        if armed and event.request_id in one_command:
            armed = False
            os.kill(pid, signal.SIGSTOP)  # the one command applied; the store hangs now

    def failed(event: Any) -> None:
        gave_up(event)
        if event.command_name == "findAndModify":
            os.kill(pid, signal.SIGCONT)  # the claim was given up: the store answers again

    async with running("intake", settings) as svc:
        svc.app.state.intake.clock = lambda: SUNDAY_1000_WIB
        r = await svc.http.put(QUOTAS, json={"quotas": {"KTP-CETAK": 5}}, headers=ADMIN)
        assert r.status_code == 200, r.text
        warm = await svc.http.post("/api/v1/requests", json=body(1))
        assert warm.status_code == 202, warm.text
        monkeypatch.setattr(STORE_COMMANDS, "started", started)
        monkeypatch.setattr(STORE_COMMANDS, "succeeded", succeeded)
        monkeypatch.setattr(STORE_COMMANDS, "failed", failed)
        armed = True
        failing = await svc.http.post(
            "/api/v1/requests", json=body(2, services=["KTP-CETAK", "KK-UBAH"])
        )
        monkeypatch.undo()
        assert not armed, "the one command was not sent"
        assert failing.status_code == 503, failing.text
        assert failing.json()["error"]["code"] == "store_unavailable"
        store = svc.app.state.intake.store
        assert await count(store.requests, {"session_id": SESSION}) == 1
        assert await held(svc) == (5, 1, 4)


async def test_a_quota_document_gone_under_a_hint_is_made_again_whole(fast: Settings) -> None:
    """The instance has seen KTP-CETAK's quota; the document is then gone from the store (an
    operator's cleanup, a restore). The hinted statement's upsert must not leave a counter
    with no `limit` behind (`{limit: null}` would match it: never enforced again, and the admin
    page would not see it): the quota is made again whole, with the catalogue's default, and
    counts every place taken since; an admin's limit then holds."""
    settings = fast.model_copy(update={"demo": False})
    async with running("intake", settings) as svc:
        svc.app.state.intake.clock = lambda: SUNDAY_1000_WIB
        await svc.http.put(QUOTAS, json={"quotas": {"KTP-CETAK": 2}}, headers=ADMIN)
        first = await svc.http.post("/api/v1/requests", json=body(1))
        assert first.status_code == 202, first.text
        store = svc.app.state.intake.store
        gone = await store.quotas.delete_one({"_id": f"{SESSION}|KTP-CETAK"})
        assert gone.deleted_count == 1
        for n in range(2, 5):  # the first made it again; the others use the one command
            answer = await svc.http.post("/api/v1/requests", json=body(n))
            assert answer.status_code == 202, answer.text
        doc = await store.quotas.find_one({"_id": f"{SESSION}|KTP-CETAK"})
        assert doc is not None and doc.get("session_id") == SESSION and doc.get("limit"), doc
        limit, used, remaining = await held(svc)
        assert (used, remaining) == (3, limit - 3)  # the three taken since it was gone
        # An admin caps it at what is used: the next submit is refused, none left.
        await svc.http.put(QUOTAS, json={"quotas": {"KTP-CETAK": 3}}, headers=ADMIN)
        full = await svc.http.post("/api/v1/requests", json=body(5))
        assert full.status_code == 409, full.text
        assert await held(svc) == (3, 3, 0)


async def test_only_phone_windows_are_read_from_rate_windows_at_start(
    fast: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`adopt_rate_windows` reads the phone windows counted before ADR 0211, not every open
    window of `rate_windows` (the address windows stay there and would be read for nothing):
    what the store answers holds the phone's window only."""
    answers: list[int] = []
    counted = STORE_COMMANDS.succeeded

    def succeeded(event: Any) -> None:
        counted(event)
        if event.command_name == "find" and "cursor" in event.reply:
            answers.append(len(event.reply["cursor"]["firstBatch"]))

    async with running("intake", fast) as svc:
        intake = svc.app.state.intake
        now = intake.clock()
        start = int(now.timestamp()) // 3600 * 3600
        until = instant(now + timedelta(hours=2))
        phone = f"{WINDOW_PREFIX}{intake._keyed('+6281234567890')}|{start}"
        await intake.store.rates.insert_many(
            [{"_id": phone, "n": 1, "expires_at": until}]
            + [{"_id": f"ip:203.0.113.{n}|{start}", "n": 1, "expires_at": until} for n in range(5)]
        )
        monkeypatch.setattr(STORE_COMMANDS, "succeeded", succeeded)
        assert await intake.store.adopt_rate_windows(now) == 1
        monkeypatch.undo()
    assert answers == [1], answers
