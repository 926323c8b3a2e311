"""Sign-in over real HTTP semantics (cookies, forms): CSRF on forms and page JSON calls, a new
session id at every login (no fixation), logout, token revocation, headers and the body cap."""

from __future__ import annotations

import re

import httpx
import pytest

from giliran.auth import Role
from giliran.auth.web import PRE_COOKIE, SESSION_COOKIE
from giliran.settings import Settings
from tests.conftest import RunningService, running

pytestmark = pytest.mark.integration
SITE = "cikarang-utara"
CALL_NEXT = f"/api/v1/sites/{SITE}/counters/1/call-next"
HOST = "queue.local"  # where httpx files cookies for http://queue


def browser(svc: RunningService) -> httpx.AsyncClient:
    """A client that keeps cookies like a browser and follows nothing by itself."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=svc.app), base_url="http://queue")


async def login(client: httpx.AsyncClient, name: str, password: str) -> httpx.Response:
    form = await client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf is not None
    return await client.post(
        "/login",
        data={"username": name, "password": password, "csrf": csrf.group(1), "next": "/"},
    )


async def csrf_of(client: httpx.AsyncClient) -> str:
    page = await client.get(f"/console?site={SITE}&counter=1")
    assert page.status_code == 200, page.text
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found is not None
    return found.group(1)


async def test_csrf_is_needed_for_changes_made_with_a_session(settings: Settings) -> None:
    async with running("queue", settings) as svc, browser(svc) as client:
        await svc.runtime.accounts.add_user("budi", "rahasia-budi-1", Role.OFFICER, SITE)
        assert (await login(client, "budi", "rahasia-budi-1")).status_code == 303
        # Reading needs no token; a change without one, or with another session's, is refused.
        assert (await client.get(f"/api/v1/sites/{SITE}/counters/1")).status_code == 200
        refused = await client.post(CALL_NEXT)
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "csrf_rejected"
        assert refused.json()["error"]["message_id"].startswith("Akses ditolak")
        forged = await client.post(CALL_NEXT, headers={"X-CSRF-Token": "0" * 64})
        assert forged.status_code == 403
        token = await csrf_of(client)
        accepted = await client.post(CALL_NEXT, headers={"X-CSRF-Token": token})
        assert accepted.status_code in (200, 204), accepted.text
        # A form post carries it as a field: logging out without it is refused too.
        assert (await client.post("/logout")).status_code == 403
        out = await client.post("/logout", data={"csrf": token})
        assert out.status_code == 303
        assert (await client.get(f"/api/v1/sites/{SITE}/counters/1")).status_code == 401


async def test_the_login_form_has_its_own_csrf_check(settings: Settings) -> None:
    async with running("queue", settings) as svc, browser(svc) as client:
        await svc.runtime.accounts.add_user("budi", "rahasia-budi-1", Role.OFFICER, SITE)
        # Another site's page posting our login form has no valid token for our pre-cookie.
        await client.get("/login")
        forged = await client.post(
            "/login", data={"username": "budi", "password": "rahasia-budi-1", "csrf": "x"}
        )
        assert forged.status_code == 403
        assert SESSION_COOKIE not in client.cookies
        wrong = await login(client, "budi", "not-the-password")
        assert wrong.status_code == 401 and "Nama pengguna atau kata sandi salah" in wrong.text


async def test_a_login_never_keeps_a_session_id_it_was_given(settings: Settings) -> None:
    async with running("queue", settings) as svc:
        await svc.runtime.accounts.add_user("budi", "rahasia-budi-1", Role.OFFICER, SITE)
        async with browser(svc) as attacker, browser(svc) as victim:
            await login(attacker, "budi", "rahasia-budi-1")
            planted = attacker.cookies.get(SESSION_COOKIE, domain=HOST)
            # The victim's browser carries the attacker's cookie, then signs in.
            victim.cookies.set(SESSION_COOKIE, planted, domain=HOST)
            victim.cookies.set(PRE_COOKIE, "planted-pre", domain=HOST)
            await login(victim, "budi", "rahasia-budi-1")
            fresh = victim.cookies.get(SESSION_COOKIE, domain=HOST)
            assert fresh != planted
            # ...and the planted session ended with that login: the attacker holds nothing.
            gone = await attacker.get(f"/api/v1/sites/{SITE}/counters/1")
            assert gone.status_code == 401
            assert (await victim.get(f"/api/v1/sites/{SITE}/counters/1")).status_code == 200


async def test_a_forged_or_edited_session_cookie_is_refused(settings: Settings) -> None:
    async with running("queue", settings) as svc, browser(svc) as client:
        await svc.runtime.accounts.add_user("budi", "rahasia-budi-1", Role.OFFICER, SITE)
        await login(client, "budi", "rahasia-budi-1")
        signed = client.cookies.get(SESSION_COOKIE, domain=HOST)
        assert signed is not None
        client.cookies.set(
            SESSION_COOKIE, signed[:-2] + ("AA" if signed[-2:] != "AA" else "BB"), domain=HOST
        )
        assert (await client.get(f"/api/v1/sites/{SITE}/counters/1")).status_code == 401
        # A new password ends every session of that person.
        client.cookies.set(SESSION_COOKIE, signed, domain=HOST)
        assert (await client.get(f"/api/v1/sites/{SITE}/counters/1")).status_code == 200
        await svc.runtime.accounts.set_password("budi", "another-pass-2")
        assert (await client.get(f"/api/v1/sites/{SITE}/counters/1")).status_code == 401


async def test_a_revoked_token_stops_working_at_once(settings: Settings) -> None:
    async with running("queue", settings) as svc:
        token_id, token = await svc.runtime.accounts.issue_token("loket-1", Role.OFFICER, SITE)
        auth = {"Authorization": f"Bearer {token}"}
        url = f"/api/v1/sites/{SITE}/counters/1"
        assert (await svc.anonymous.get(url, headers=auth)).status_code == 200
        # Stored only as a digest: the database never holds a usable token.
        stored = await svc.runtime.accounts.tokens.find_one({"_id": token_id})
        assert stored is not None and token not in str(stored)
        assert await svc.runtime.accounts.revoke_token(token_id)
        refused = await svc.anonymous.get(url, headers=auth)
        assert refused.status_code == 401 and refused.json()["error"]["message_en"]


async def test_passwords_are_stored_as_argon2_hashes(settings: Settings) -> None:
    async with running("queue", settings) as svc:
        await svc.runtime.accounts.add_user("budi", "rahasia-budi-1", Role.OFFICER, SITE)
        user = await svc.runtime.accounts.users.find_one({"_id": "budi"})
        assert user is not None and user["password"].startswith("$argon2id$")
        assert "rahasia-budi-1" not in str(user)


async def test_security_headers_on_every_response_and_a_body_cap(settings: Settings) -> None:
    small = settings.model_copy(update={"max_body_bytes": 4096})
    async with running("queue", small) as svc:
        for path in ("/healthz", f"/console?site={SITE}&counter=1", "/login", "/nosuch"):
            answer = await svc.anonymous.get(path)
            csp = answer.headers["content-security-policy"]
            assert "script-src 'self'" in csp and "unsafe-inline" not in csp.split("style-src")[0]
            assert "frame-ancestors 'none'" in csp, path
            assert answer.headers["x-content-type-options"] == "nosniff"
            assert answer.headers["referrer-policy"] == "same-origin"
        # A board may be framed by a signage page of the same box, nothing else may.
        board = await svc.anonymous.get(f"/board?site={SITE}")
        assert "frame-ancestors 'self'" in board.headers["content-security-policy"]
        big = await svc.http.post(CALL_NEXT, content=b"x" * 5000)
        assert big.status_code == 413 and big.json()["error"]["message_id"]

        async def chunks():  # type: ignore[no-untyped-def]
            for _ in range(10):
                yield b"y" * 1000

        # Chunked, with no length announced: cut off once the endpoint reads past the cap.
        opening = f"/api/v1/sites/{SITE}/counters/2/open"
        streamed = await svc.http.post(opening, content=chunks())
        assert streamed.status_code == 413


async def test_start_up_refuses_an_empty_session_key_outside_demo(settings: Settings) -> None:
    bare = settings.model_copy(update={"session_key": None, "demo": False})
    with pytest.raises(RuntimeError, match="GILIRAN_SESSION_KEY"):
        async with running("queue", bare):
            pass


async def test_a_form_posted_from_another_site_is_refused(settings: Settings) -> None:
    """Citizens' forms carry no session, so no synchronizer token: a browser's Origin decides."""
    async with running("intake", settings) as svc:
        form = {"site": SITE, "services": "KTP-CETAK", "name": "Warga", "lang": "id"}
        forged = await svc.anonymous.post(
            "/daftar", data=form, headers={"Origin": "https://evil.example"}
        )
        assert forged.status_code == 403
        assert forged.json()["error"]["code"] == "cross_origin"
        assert forged.json()["error"]["message_id"].startswith("Akses ditolak")
        sandboxed = await svc.anonymous.post("/daftar", data=form, headers={"Origin": "null"})
        assert sandboxed.status_code == 403
        ours = await svc.anonymous.post("/daftar", data=form, headers={"Origin": "http://intake"})
        assert ours.status_code == 303, ours.text  # registered, sent to the status page


async def test_expired_sessions_are_refused_and_then_forgotten(settings: Settings) -> None:
    from datetime import timedelta

    from giliran.auth.credentials import forget_credentials
    from giliran.contracts import utcnow
    from giliran.store import instant

    async with running("queue", settings) as svc, browser(svc) as client:
        await svc.runtime.accounts.add_user("budi", "rahasia-budi-1", Role.OFFICER, SITE)
        await login(client, "budi", "rahasia-budi-1")
        url = f"/api/v1/sites/{SITE}/counters/1"
        assert (await client.get(url)).status_code == 200
        past = instant(utcnow() - timedelta(minutes=1))
        await svc.runtime.accounts.sessions.update_many({}, {"$set": {"expires_at": past}})
        # Changed behind the services' back: they learn of it as of any credential change (the
        # NATS notice runs this; ADR 0180). A session remembered ends at its own end anyway.
        forget_credentials()
        assert (await client.get(url)).status_code == 401
        assert await svc.runtime.accounts.forget_expired() == 1


async def test_password_guessing_is_stopped_for_that_user_name(settings: Settings) -> None:
    from datetime import timedelta

    from giliran.auth.accounts import LOGIN_FAILURE_WINDOW, LOGIN_FAILURES_ALLOWED
    from giliran.contracts import utcnow
    from giliran.store import instant

    async with running("queue", settings) as svc, browser(svc) as client:
        accounts = svc.runtime.accounts
        await accounts.add_user("budi", "rahasia-budi-1", Role.OFFICER, SITE)
        await accounts.add_user("sari", "rahasia-sari-1", Role.OFFICER, SITE)
        # A success clears earlier failures: a colleague's typo never adds up to a lock.
        assert (await login(client, "budi", "salah-0")).status_code == 401
        assert (await login(client, "budi", "rahasia-budi-1")).status_code == 303
        for n in range(LOGIN_FAILURES_ALLOWED):
            wrong = await login(client, "budi", f"tebakan-{n}")
            assert wrong.status_code == 401
            assert "kata sandi salah" in wrong.text
        # Now even the right password is refused for this name, in both languages...
        locked = await login(client, "Budi", "rahasia-budi-1")
        assert locked.status_code == 429
        assert "Terlalu banyak percobaan masuk" in locked.text
        assert SESSION_COOKIE not in locked.cookies
        # ...while another name signs in as usual, and so does this name from another address
        # (a stranger who knows an officer's name cannot lock the officer out).
        assert (await login(client, "sari", "rahasia-sari-1")).status_code == 303
        office = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=svc.app, client=("10.20.30.40", 50000)),
            base_url="http://queue",
        )
        async with office:
            assert (await login(office, "budi", "rahasia-budi-1")).status_code == 303
        # The name and the address are stored only as digests (one count for the name from
        # this address, one for the address whatever the names).
        stored = await accounts.login_failures.find({}).to_list()
        assert len(stored) == 2 and "budi" not in str(stored).lower()
        assert "127.0.0.1" not in str(stored) and "testclient" not in str(stored)
        # When the window has passed, the right password works again.
        past = utcnow() - LOGIN_FAILURE_WINDOW - timedelta(seconds=1)
        await accounts.login_failures.update_many({}, {"$set": {"since": instant(past)}})
        assert (await login(client, "budi", "rahasia-budi-1")).status_code == 303
        # The name's count is gone; the address's stays until its window ends (a success by
        # one name never wipes what other names' failures counted), and that window has ended.
        left = await accounts.login_failures.find({}).to_list()
        assert [doc["name"] for doc in left] == [None]
        assert await accounts.failed_sign_ins_from("127.0.0.1", utcnow()) == 0
