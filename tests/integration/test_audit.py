"""The audit trail: counter actions recorded with who, role, site, before and after; one hash
chain that `giliran audit verify` checks, naming the first record edited or removed."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

import pytest

from giliran.auth import Principal, Role
from giliran.settings import Settings
from tests.conftest import eventually, publish, request_event, running

pytestmark = pytest.mark.integration
SITE = "cikarang-utara"


def verify_cli(settings: Settings) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "GILIRAN_MONGO_URL": settings.mongo_url,
        "GILIRAN_DB_PREFIX": settings.db_prefix,
    }
    return subprocess.run(
        [sys.executable, "-m", "giliran.cli", "audit", "verify"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_counter_actions_are_recorded_and_the_chain_verifies(settings: Settings) -> None:
    async with running("queue", settings) as svc:
        event = request_event(["KTP-REKAM"])
        await publish(settings, event)

        async def ticketed() -> list[dict[str, Any]]:
            answer = await svc.http.get(f"/api/v1/sites/{SITE}/requests/{event.data.request_id}")
            return answer.json() if answer.status_code == 200 else []  # type: ignore[no-any-return]

        await eventually(ticketed)
        _, officer = await svc.runtime.accounts.issue_token("loket-1", Role.OFFICER, SITE)
        as_officer = {"Authorization": f"Bearer {officer}"}
        base = f"/api/v1/sites/{SITE}/counters/1"
        called = await svc.anonymous.post(f"{base}/call-next", headers=as_officer)
        ticket_id = called.json()["ticket"]["ticket_id"]
        await svc.anonymous.post(f"{base}/tickets/{ticket_id}/recall", headers=as_officer)
        await svc.anonymous.post(f"{base}/tickets/{ticket_id}/complete", headers=as_officer)

        _, auditor = await svc.runtime.accounts.issue_token("inspektorat", Role.AUDITOR, SITE)
        trail = await svc.anonymous.get(
            "/api/v1/audit", headers={"Authorization": f"Bearer {auditor}"}
        )
        assert trail.status_code == 200
        records = trail.json()
        assert [r["action"] for r in records] == ["call_next", "recall", "complete"]
        assert {(r["actor"], r["role"], r["site"], r["service"]) for r in records} == {
            ("loket-1", "officer", SITE, "queue")
        }
        assert '"status":"called"' in records[1]["before"]
        assert '"recalls":1' in records[1]["after"]
        assert '"status":"completed"' in records[2]["after"]
        assert records[1]["prev"] == records[0]["hash"]

        ok = verify_cli(settings)
        assert ok.returncode == 0 and "ok: 3 record(s)" in ok.stdout, ok.stdout + ok.stderr

        # Someone with access to the store rewrites history: the officer "never recalled".
        await svc.runtime.audit.records.update_one({"seq": 2}, {"$set": {"actor": "someone-else"}})
        edited = verify_cli(settings)
        assert edited.returncode == 1
        assert "BROKEN at record 2: content does not match its hash" in edited.stdout
        answer = await svc.anonymous.get(
            "/api/v1/audit/verify", headers={"Authorization": f"Bearer {auditor}"}
        )
        assert answer.json()["broken"] == {"seq": 2, "reason": "content does not match its hash"}


async def test_a_removed_record_is_named_and_racing_writers_keep_one_chain(
    settings: Settings,
) -> None:
    async with running("reporting", settings) as svc:
        who = Principal("tester", Role.ADMIN, "*", "token")
        await asyncio.gather(
            *(svc.runtime.audit.record(who, "x", SITE, f"t{n}", None, {"n": n}) for n in range(12))
        )
        checked, _, broken = await svc.runtime.audit.verify()
        assert (checked, broken) == (12, None)
        seqs = sorted(r["seq"] for r in await svc.runtime.audit.read(limit=100))
        assert seqs == list(range(1, 13))
        await svc.runtime.audit.records.delete_one({"seq": 5})
        _, _, broken = await svc.runtime.audit.verify()
        assert broken is not None and (broken.seq, broken.reason) == (5, "record missing")
