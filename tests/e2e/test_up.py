"""`giliran up` end to end: all services as processes, one lifecycle over HTTP, a service killed
with SIGKILL mid-session, and a clean stop that leaves no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from giliran_ops.embedded import free_port
from tests.conftest import ARTIFACTS

pytestmark = pytest.mark.e2e

SITE = "cikarang-utara"


def _processes_with(marker: str) -> list[int]:
    """Pids of live processes whose environment carries `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().split(") ")[1][0]
        except OSError:
            continue
        if marker.encode() in environ and state != "Z":
            found.append(int(entry.name))
    return found


def _service_pid(marker: str, service: str) -> int:
    for pid in _processes_with(marker):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"service" in cmdline and service.encode() in cmdline:
            return pid
    raise AssertionError(f"no {service} process found")


class Stack:
    def __init__(self, process: subprocess.Popen[str], ports: dict[str, int], marker: str) -> None:
        self.process = process
        self.ports = ports
        self.marker = marker
        self.output: list[str] = []

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    marker = f"GILIRAN_TEST_RUN={uuid.uuid4().hex}"
    ports = {s: free_port() for s in ("intake", "queue", "notify", "reporting")}
    env = {
        **os.environ,
        marker.split("=")[0]: marker.split("=")[1],
        **{f"GILIRAN_{s.upper()}_PORT": str(p) for s, p in ports.items()},
    }
    env.pop("GILIRAN_NATS_URL", None)
    env.pop("GILIRAN_MONGO_URL", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "giliran_ops.cli", "up", "--demo", "--data", str(tmp_path / "data")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    running = Stack(process, ports, marker)
    ready = threading.Event()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            running.output.append(line)
            if line.startswith("Press Ctrl-C"):  # the whole banner, credentials included
                ready.set()

    threading.Thread(target=pump, daemon=True).start()
    try:
        assert ready.wait(timeout=90), "".join(running.output[-40:])
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "e2e-giliran-up.log").write_text("".join(running.output))


def _submit(http: httpx.Client, stack: Stack, services: list[str], name: str) -> dict[str, object]:
    r = http.post(
        f"{stack.url('intake')}/api/v1/requests",
        json={
            "site": SITE,
            "services": services,
            "name": name,
            "phone": "081234567890",
            "consent": True,
        },
    )
    assert r.status_code in (201, 202), r.text
    body: dict[str, object] = r.json()
    return body


def _wait(check: object, within: float = 30.0) -> object:
    assert callable(check)
    deadline = time.monotonic() + within
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"not reached in {within}s: {last!r}")


def _demo_token(stack: Stack) -> str:
    """`up --demo` prints a supervisor's API token for the demo site."""
    line = next(line for line in stack.output if line.strip().startswith("api token"))
    return line.split()[2]


def test_lifecycle_crash_and_clean_stop(stack: Stack) -> None:
    # Demo credentials are printed, and production-looking default passwords are not: each
    # person's password is random.
    printed = "".join(stack.output)
    assert "petugas / " in printed and "admin / " in printed
    staff = {"Authorization": f"Bearer {_demo_token(stack)}"}
    with httpx.Client(timeout=10, headers=staff) as http:
        for service in stack.ports:
            assert http.get(f"{stack.url(service)}/readyz").status_code == 200
        # Strangers are refused where staff work.
        anonymous = httpx.post(f"{stack.url('queue')}/api/v1/sites/{SITE}/counters/1/call-next")
        assert anonymous.status_code == 401

        # One citizen, one service, start to finish.
        body = _submit(http, stack, ["KTP-CETAK"], "Siti")
        tickets = body["tickets"]
        assert isinstance(tickets, list) and tickets, body
        number = tickets[0]["number"]
        called = http.post(f"{stack.url('queue')}/api/v1/sites/{SITE}/counters/1/call-next")
        assert called.status_code == 200 and called.json()["ticket"]["number"] == number
        ticket_id = called.json()["ticket"]["ticket_id"]
        done = http.post(f"{stack.url('queue')}/api/v1/tickets/{ticket_id}/complete")
        assert done.json()["ticket"]["status"] == "completed"

        def deliveries() -> list[dict[str, object]] | None:
            r = http.get(
                f"{stack.url('notify')}/api/v1/deliveries", params={"ticket_id": ticket_id}
            )
            found: list[dict[str, object]] = r.json()["deliveries"]
            return found if len(found) == 3 else None

        sent = _wait(deliveries)
        assert isinstance(sent, list)
        assert [d["template"] for d in sent] == [
            "ticket_issued",
            "ticket_called",
            "ticket_completed",
        ]
        day = datetime.now(ZoneInfo("Asia/Jakarta")).date().isoformat()

        def counted() -> dict[str, object] | None:
            r = http.get(f"{stack.url('reporting')}/api/v1/sites/{SITE}/summary?date={day}")
            summary: dict[str, object] = r.json()
            return summary if summary["completed"] == 1 else None

        summary = _wait(counted)
        assert isinstance(summary, dict)
        assert (summary["submitted"], summary["issued"], summary["called"]) == (1, 1, 1)

        # The queue service dies (kill -9); intake keeps accepting; `up` restarts the queue;
        # every request made meanwhile is ticketed exactly once.
        os.kill(_service_pid(stack.marker, "queue"), signal.SIGKILL)
        ids = [str(_submit(http, stack, ["KIA", "IKD"], f"W{i}")["request_id"]) for i in range(4)]

        def all_ticketed() -> bool:
            for request_id in ids:
                r = http.get(f"{stack.url('intake')}/api/v1/requests/{request_id}")
                if len(r.json()["tickets"]) != 2:
                    return False
            return True

        _wait(all_ticketed, within=60)
        numbers = []
        for request_id in ids:
            r = http.get(f"{stack.url('intake')}/api/v1/requests/{request_id}")
            numbers += [t["number"] for t in r.json()["tickets"]]
        assert sorted(numbers) == sorted(
            [f"K-00{i}" for i in range(1, 5)] + [f"N-00{i}" for i in range(1, 5)]
        )
        assert any("restarting it" in line for line in stack.output)

    # Ctrl-C: everything stops and nothing is left running.
    stack.process.send_signal(signal.SIGINT)
    assert stack.process.wait(timeout=60) == 0
    time.sleep(0.5)
    assert _processes_with(stack.marker) == []
