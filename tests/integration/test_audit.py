"""The audit trail: counter actions recorded with who, role, site, before and after, over HTTP
and over NATS; each record stored in the very write of its action (a failure between the two
loses neither); one HMAC chain that `giliran audit verify` checks with GILIRAN_AUDIT_KEY, so
someone with store access alone can neither edit a record nor rebuild the chain unseen."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import os
import subprocess
import sys
from typing import Any

import pytest
from pymongo.errors import AutoReconnect

from giliran.auth import Principal, Role
from giliran.auth.audit import DEMO_KEY, DEMO_KEY_ID, HASHED, AuditLog
from giliran.contracts import CallNext, TicketAction
from giliran.settings import Settings
from tests.conftest import RunningService, eventually, nats_client, publish, request_event, running

pytestmark = pytest.mark.integration
SITE = "cikarang-utara"
NEW_KEY = "a-newer-audit-key-of-sufficient-length-0123"


def verify_cli(settings: Settings, key: str | None = None) -> subprocess.CompletedProcess[str]:
    assert settings.audit_key is not None
    env = {
        **os.environ,
        "GILIRAN_MONGO_URL": settings.mongo_url,
        "GILIRAN_DB_PREFIX": settings.db_prefix,
        "GILIRAN_AUDIT_KEY": key or settings.audit_key.get_secret_value(),
    }
    return subprocess.run(
        [sys.executable, "-m", "giliran_ops.cli", "audit", "verify"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def waiting_ticket(svc: RunningService) -> str:
    event = request_event(["KTP-REKAM"])
    await publish(svc.runtime.settings, event)

    async def ticketed() -> list[dict[str, Any]]:
        answer = await svc.http.get(f"/api/v1/sites/{SITE}/requests/{event.data.request_id}")
        return answer.json() if answer.status_code == 200 else []  # type: ignore[no-any-return]

    found = await eventually(ticketed)
    return str(found[0]["ticket_id"])


async def trail(svc: RunningService, at_least: int) -> list[dict[str, Any]]:
    """The records, once the relay has appended `at_least` of them."""

    async def read() -> list[dict[str, Any]] | None:
        found = await svc.runtime.audit.read(limit=100)
        return found if len(found) >= at_least else None

    result: list[dict[str, Any]] = await eventually(read, within=15)
    return result


async def test_counter_actions_are_recorded_and_the_chain_verifies(settings: Settings) -> None:
    async with running("queue", settings) as svc:
        await waiting_ticket(svc)
        _, officer = await svc.runtime.accounts.issue_token("loket-1", Role.OFFICER, SITE)
        as_officer = {"Authorization": f"Bearer {officer}"}
        base = f"/api/v1/sites/{SITE}/counters/1"
        called = await svc.anonymous.post(f"{base}/call-next", headers=as_officer)
        assert called.status_code == 200, called.text
        ticket_id = called.json()["ticket"]["ticket_id"]
        await svc.anonymous.post(f"{base}/tickets/{ticket_id}/recall", headers=as_officer)
        await svc.anonymous.post(f"{base}/tickets/{ticket_id}/complete", headers=as_officer)
        # call-next opened the counter (counter.opened) and called (ticket.called): 2 records.
        await trail(svc, 4)

        _, auditor = await svc.runtime.accounts.issue_token("inspektorat", Role.AUDITOR, SITE)
        answer = await svc.anonymous.get(
            "/api/v1/audit", headers={"Authorization": f"Bearer {auditor}"}
        )
        assert answer.status_code == 200
        records = answer.json()
        about_ticket = [r for r in records if r["target"] == f"ticket:{ticket_id}"]
        assert [r["action"] for r in about_ticket] == ["recall", "complete"]
        at_counter = [r["action"] for r in records if r["target"] == "counter:1"]
        assert at_counter == ["call_next", "call_next"]
        assert {(r["actor"], r["role"], r["site"], r["service"]) for r in records} == {
            ("loket-1", "officer", SITE, "queue")
        }
        events = {json.loads(r["after"])["event"] for r in records}
        assert events == {
            "giliran.counter.opened.v1",
            "giliran.ticket.called.v1",
            "giliran.ticket.recalled.v1",
            "giliran.ticket.completed.v1",
        }
        assert '"status":"called"' in about_ticket[0]["before"]
        assert '"recalls":1' in about_ticket[1]["before"]
        for earlier, later in itertools.pairwise(records):
            assert later["prev"] == earlier["hash"]

        ok = verify_cli(settings)
        assert ok.returncode == 0 and "ok: 4 record(s)" in ok.stdout, ok.stdout + ok.stderr

        # Someone with access to the store rewrites history: the officer "never recalled".
        recall_seq = about_ticket[0]["seq"]
        await svc.runtime.audit.records.update_one(
            {"seq": recall_seq}, {"$set": {"actor": "someone-else"}}
        )
        edited = verify_cli(settings)
        assert edited.returncode == 1
        assert f"BROKEN at record {recall_seq}: content does not match its hash" in edited.stdout
        answer = await svc.anonymous.get(
            "/api/v1/audit/verify", headers={"Authorization": f"Bearer {auditor}"}
        )
        assert answer.json()["broken"] == {
            "seq": recall_seq,
            "reason": "content does not match its hash",
        }


async def test_counter_commands_over_nats_are_audited_as_the_sites_device(
    settings: Settings,
) -> None:
    async with running("queue", settings) as svc, nats_client(settings) as client:
        ticket_id = await waiting_ticket(svc)

        async def send(subject: str, body: dict[str, Any]) -> dict[str, Any]:
            reply = await client.request(subject, json.dumps(body).encode(), timeout=5)
            answer: dict[str, Any] = json.loads(reply.data)
            assert answer["ok"], reply.data
            return answer

        called = await send(CallNext.subject(SITE), {"site": SITE, "counter": "2"})
        assert called["ticket"]["ticket_id"] == ticket_id, called
        await send(
            TicketAction.subject(SITE, "recall"),
            {"site": SITE, "counter": "2", "ticket_id": ticket_id},
        )
        records = await trail(svc, 3)
        assert {(r["actor"], r["role"], r["site"]) for r in records} == {
            (f"device-{SITE}", "officer", SITE)
        }
        assert sorted(r["action"] for r in records) == ["call_next", "call_next", "recall"]
        [recall] = [r for r in records if r["action"] == "recall"]
        assert recall["target"] == f"ticket:{ticket_id}"
        assert '"status":"called"' in recall["before"]
        assert (await svc.runtime.audit.verify()).broken is None


async def test_an_action_keeps_its_record_when_the_trail_cannot_be_written(
    settings: Settings,
) -> None:
    """The audit store fails right after the action (the moment a crash would hit): the record
    is in the action's own write and reaches the trail once the store answers again."""
    async with running("queue", settings) as svc:
        ticket_id = await waiting_ticket(svc)
        records = svc.runtime.audit.records
        working = records.insert_many
        failures: list[str] = []

        async def down(*args: Any, **kwargs: Any) -> Any:
            failures.append("refused")
            raise AutoReconnect("the auth database is unreachable")

        records.insert_many = down  # type: ignore[method-assign]
        try:
            action = f"/api/v1/sites/{SITE}/counters/1/tickets/{ticket_id}/call"
            answer = await svc.http.post(action)
            assert answer.status_code == 200, answer.text  # the officer's call went through
            await eventually(lambda: asyncio.sleep(0, len(failures) >= 1))
            pending = await svc.app.state.queue.store.tickets.find_one({"_id": ticket_id})
            notes = [e["audit"] for e in (pending.get("outbox") or {}).values() if "audit" in e]
            assert [n["action"] for n in notes] == ["call"]
        finally:
            records.insert_many = working  # type: ignore[method-assign]
        # The call opened the counter (counter.opened) and called the ticket (ticket.called).
        found = await trail(svc, 2)
        assert {(r["action"], r["target"], r["actor"]) for r in found} == {
            ("call", f"ticket:{ticket_id}", "test-harness")
        }
        [record] = [r for r in found if "ticket.called" in r["after"]]
        # Recorded once, even though the relay tried again after each failure.
        await asyncio.sleep(1.0)
        again = await svc.runtime.audit.read(limit=100)
        assert [r["event"] for r in again].count(record["event"]) == 1


def _forge(record: dict[str, Any], previous: str, key: bytes | None, key_name: str | None) -> str:
    """What a forger with store access can compute: the old unkeyed SHA-256 form, or HMAC with
    the public demo key or a key of their own."""
    if key is None:
        fields = ("seq", "at", "service", "actor", "role", "site", "action", "target")
        body = {k: record.get(k) for k in (*fields, "before", "after")}
        canonical = previous + json.dumps(body, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()
    body = {k: record.get(k) for k in HASHED} | {"key": key_name}
    canonical = previous + json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hmac.new(key, canonical.encode(), hashlib.sha256).hexdigest()


@pytest.mark.parametrize(
    ("key", "key_name"),
    [(None, None), (DEMO_KEY, DEMO_KEY_ID), (b"a-key-of-the-forgers-own", "keep")],
    ids=["unkeyed-sha256", "public-demo-key", "own-key-real-key-id"],
)
async def test_store_access_alone_cannot_rebuild_the_chain(
    settings: Settings, key: bytes | None, key_name: str | None
) -> None:
    """Edit a record and recompute every hash after it, as the chain was before it was keyed:
    verify names the edited record however the forger computes."""
    async with running("reporting", settings) as svc:
        who = Principal("petugas", Role.OFFICER, SITE, "token")
        for n in range(4):
            await svc.runtime.audit.record(who, "recall", SITE, f"ticket:t{n}", None, {"n": n})
        assert verify_cli(settings).returncode == 0
        docs = await svc.runtime.audit.read(limit=10)
        previous = docs[0]["hash"]
        for doc in docs[1:]:
            doc["actor"] = "someone-else"
            name = key_name if key_name != "keep" else doc["key"]
            fields: dict[str, Any] = {"actor": doc["actor"], "prev": previous}
            if key is None:
                fields["key"] = None
            else:
                fields["key"] = name
            doc.update(fields)
            doc["hash"] = _forge(doc, previous, key, name)
            await svc.runtime.audit.records.update_one(
                {"seq": doc["seq"]}, {"$set": {**fields, "hash": doc["hash"]}}
            )
            previous = doc["hash"]
        rebuilt = verify_cli(settings)
        assert rebuilt.returncode == 1, rebuilt.stdout
        assert "BROKEN at record 2" in rebuilt.stdout, rebuilt.stdout
        # And verify needs the key: without it (or with another) the genuine chain fails too.
        wrong = verify_cli(settings, key="not-the-key-of-this-chain-0123456789abcdef")
        assert wrong.returncode == 1 and "BROKEN at record 1" in wrong.stdout


async def test_a_rotated_key_verifies_old_and_new_records(settings: Settings) -> None:
    assert settings.audit_key is not None
    old = settings.audit_key.get_secret_value()
    async with running("reporting", settings) as svc:
        who = Principal("tester", Role.ADMIN, "*", "token")
        await svc.runtime.audit.record(who, "x", SITE, "t-old", None, None)
    rotated = settings.model_copy(
        update={"audit_key": type(settings.audit_key)(f"{NEW_KEY},{old}")}
    )
    async with running("reporting", rotated) as svc:
        await svc.runtime.audit.record(who, "x", SITE, "t-new", None, None)
        found = await svc.runtime.audit.verify()
        assert found.broken is None and found.checked == 2
        assert sorted(found.by_key.values()) == [1, 1]
    assert verify_cli(settings, key=f"{NEW_KEY},{old}").returncode == 0
    dropped = verify_cli(settings, key=NEW_KEY)  # the old key left too early
    assert dropped.returncode == 1 and "BROKEN at record 1" in dropped.stdout


async def test_a_removed_record_is_named_and_racing_writers_keep_one_chain(
    settings: Settings,
) -> None:
    async with running("reporting", settings) as svc:
        who = Principal("tester", Role.ADMIN, "*", "token")
        await asyncio.gather(
            *(svc.runtime.audit.record(who, "x", SITE, f"t{n}", None, {"n": n}) for n in range(12))
        )
        found = await svc.runtime.audit.verify()
        assert (found.checked, found.broken) == (12, None)
        seqs = sorted(r["seq"] for r in await svc.runtime.audit.read(limit=100))
        assert seqs == list(range(1, 13))
        await svc.runtime.audit.records.delete_one({"seq": 5})
        broken = (await svc.runtime.audit.verify()).broken
        assert broken is not None and (broken.seq, broken.reason) == (5, "record missing")


async def test_two_processes_appending_keep_one_chain_though_each_remembers_its_head(
    settings: Settings,
) -> None:
    # Two AuditLogs on one store are two processes' views: each remembers the head it wrote
    # last, which goes stale as soon as the other appends. The chain must stay one chain.
    async with running("reporting", settings) as svc:
        first = svc.runtime.audit
        second = AuditLog(first.records.database, "queue", first.keys)
        who = Principal("tester", Role.ADMIN, "*", "token")
        for round_ in range(4):
            await asyncio.gather(
                *(
                    log.record(who, "x", SITE, f"{name}{round_}-{n}", None, {"n": n})
                    for n in range(3)
                    for name, log in (("a", first), ("b", second))
                )
            )
        found = await first.verify()
        assert (found.checked, found.broken) == (24, None)
        seqs = sorted(r["seq"] for r in await first.read(limit=100))
        assert seqs == list(range(1, 25))
