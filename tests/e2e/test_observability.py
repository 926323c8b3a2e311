"""deploy/observability/ against running services: the dashboard and the alert rules name only
metrics the four service processes expose after some traffic, the rules pass promtool (and its
rule unit tests) when it is installed, and JSON logs follow one citizen through every service."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from giliran.settings import REPO_ROOT, SERVICES, Settings
from giliran_ops.embedded import ManagedProcess
from tests.conftest import ARTIFACTS, eventually, issue_token, publish, service_process
from tests.e2e.personal_data import personal_data_in

pytestmark = pytest.mark.e2e

DEPLOY = REPO_ROOT / "deploy" / "observability"
SITE = "cikarang-utara"
CITIZEN_REQUEST_ID = "citizen-e2e-0001"
METRIC_NAME = re.compile(r"\b(giliran_[a-z0-9_]+)\b")
# Trace and span ids by the keys that carry them (an all-digit span id looks like a NIK), and
# any other trace-shaped hex with at least one letter, so a NIK (16 digits) is never scrubbed.
TRACE_ID_FIELD = re.compile(r'"(trace_id|span_id|parent_id|traceparent)": ?"[^"]*"')
RANDOM_HEX = re.compile(r"\b(?:0x)?(?=[0-9]*[a-f])[0-9a-f]{16}(?:[0-9a-f]{16})?\b")


def dashboard_expressions() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    found = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            found.append(query["query"])
    return found


def rule_expressions() -> list[str]:
    rules = yaml.safe_load((DEPLOY / "alerts.yaml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def test_dashboard_and_rules_parse_and_cover_what_the_issue_asks() -> None:
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("events", "handler", "lag", "dead letters", "http", "waiting", "oldest wait",
                  "boards", "cost"):  # fmt: skip
        assert topic in titles, topic
    rules = yaml.safe_load((DEPLOY / "alerts.yaml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    assert {
        "GiliranConsumerLagHigh",
        "GiliranDeadLetters",
        "GiliranBoardDisconnected",
        "GiliranWaitAboveTarget",
    } <= alerts
    runbook = (REPO_ROOT / "docs" / "observability.md").read_text()
    for group in rules["groups"]:
        for rule in group["rules"]:
            anchor = rule["annotations"]["runbook"].split("#", 1)[1]
            assert f"### {anchor.replace('-', ' ')}" in runbook.lower(), anchor
    scrape = yaml.safe_load((DEPLOY / "prometheus.yaml").read_text())
    assert scrape["rule_files"] == ["alerts.yaml"]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_rules_pass_promtool_and_fire_when_they_should() -> None:
    for command in (
        ["promtool", "check", "rules", "alerts.yaml"],
        ["promtool", "check", "config", "prometheus.yaml"],
        # Synthetic series: each alert fires in its situation and stays quiet otherwise.
        ["promtool", "test", "rules", "alerts.test.yaml"],
    ):
        done = subprocess.run(command, cwd=DEPLOY, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses every dashboard query (as a recording rule: it has no PromQL checker)."""
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": expr.replace("$site", ".*")}
                    for i, expr in enumerate(dashboard_expressions())
                    if not expr.startswith("label_values(")
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    done = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


@asynccontextmanager
async def four_services(settings: Settings, logs: Path) -> AsyncIterator[dict[str, str]]:
    processes: dict[str, ManagedProcess] = {}
    for name in SERVICES:
        process = service_process(name, settings, logs)
        assert process.env is not None
        process.env.update(
            {
                "GILIRAN_DEMO": "true",
                "GILIRAN_LOG_FORMAT": "json",
                "GILIRAN_LOG_EVENTS": "true",
                "GILIRAN_METRICS_REFRESH_SECONDS": "0.5",
                "GILIRAN_MAX_DELIVER": "2",
                "GILIRAN_RETRY_BACKOFF_SECONDS": "[0.1, 0.1]",
                # Tracing switched on by the standard variable: spans as JSON lines on stdout.
                "OTEL_TRACES_EXPORTER": "console",
            }
        )
        processes[name] = process.start()
    try:
        urls = {name: f"http://127.0.0.1:{p.port}" for name, p in processes.items()}
        async with httpx.AsyncClient(timeout=5) as http:
            for url in urls.values():
                await eventually(lambda u=url: _ready(http, u), within=60)  # type: ignore[misc]
        yield urls
    finally:
        for process in processes.values():
            process.stop()


async def _ready(http: httpx.AsyncClient, url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return (await http.get(f"{url}/readyz")).status_code == 200
    return False


def _samples(text: str) -> set[str]:
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1].isalpha()}


async def test_running_services_expose_every_metric_the_dashboard_and_rules_use(
    settings: Settings, tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    async with four_services(settings, logs) as urls:
        token = await issue_token(settings, "supervisor", SITE, label="observability")
        staff = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(timeout=10) as http:
            submitted = await http.post(
                f"{urls['intake']}/api/v1/requests",
                json={"site": SITE, "services": ["KTP-CETAK", "KK-UBAH"], "name": "Siti",
                      "nik": "3216094512900001", "phone": "081234567890", "consent": True},
                headers={"X-Request-ID": CITIZEN_REQUEST_ID},
            )  # fmt: skip
            assert submitted.status_code == 201, submitted.text
            assert submitted.headers["x-request-id"] == CITIZEN_REQUEST_ID
            # The citizen follows the status link: its token is a credential, never traced.
            status_token = submitted.json()["status_page_url"].rsplit("/", 1)[1]
            followed = await http.get(f"{urls['intake']}/api/v1/status/{status_token}")
            assert followed.status_code == 200, followed.text
            called = await http.post(
                f"{urls['queue']}/api/v1/sites/{SITE}/counters/1/call-next", headers=staff
            )
            assert called.status_code == 200, called.text
            ticket = called.json()["ticket"]["ticket_id"]
            done = await http.post(
                f"{urls['queue']}/api/v1/tickets/{ticket}/complete", headers=staff
            )
            assert done.status_code == 200, done.text
            # A board watching the site, and an event no consumer can handle (dead letters).
            async with http.stream(
                "GET", f"{urls['queue']}/api/v1/sites/{SITE}/board/stream", headers=staff
            ) as board:
                assert board.status_code == 200
                await publish(
                    settings,
                    {"specversion": "1.0", "id": "broken-1", "source": "test",
                     "type": "giliran.request.submitted.v1", "subject": SITE,
                     "time": "2026-11-29T02:00:00Z", "data": {"request_id": "x"}},
                    msg_id="broken-1",
                )  # fmt: skip

                async def everything_seen() -> dict[str, str] | None:
                    text = {n: (await http.get(f"{u}/metrics")).text for n, u in urls.items()}
                    ready = (
                        "giliran_events_dead_lettered_total" in text["queue"]
                        and 'giliran_board_connections{site="cikarang-utara"} 1.0' in text["queue"]
                        and "giliran_notification_cost_units_total" in text["notify"]
                        and 'outcome="sent"' in text["notify"]
                        and "giliran_queue_waiting{" in text["queue"]
                    )
                    return text if ready else None

                text = await eventually(everything_seen, within=30)

            async def board_gone() -> bool:
                found = (await http.get(f"{urls['queue']}/metrics")).text
                return 'giliran_board_connections{site="cikarang-utara"} 0.0' in found

            # The board closed its stream: the gauge the "board disconnected" alert reads drops.
            await eventually(board_gone, within=30)
    exposed = set().union(*(_samples(t) for t in text.values()))
    used = {
        name for expr in dashboard_expressions() + rule_expressions()
        for name in METRIC_NAME.findall(expr)
    }  # fmt: skip
    assert used, "no metric names found in the expressions"
    assert used - exposed == set(), f"used but not exposed: {sorted(used - exposed)}"
    # What a run exposes, kept for the docs and the report.
    out = ARTIFACTS / "observability"
    out.mkdir(parents=True, exist_ok=True)
    for name, body in text.items():
        (out / f"metrics-{name}.txt").write_text(body)

    # Every line is one JSON object: a log record, or a span of the console exporter.
    records: dict[str, list[dict[str, Any]]] = {}
    spans: dict[str, list[dict[str, Any]]] = {}
    for name in SERVICES:
        raw = (logs / f"{name}.log").read_text().splitlines()
        parsed = [json.loads(line) for line in raw if line.strip()]
        records[name] = [r for r in parsed if "logger" in r]
        spans[name] = [r for r in parsed if "context" in r and "kind" in r]
        assert len(records[name]) + len(spans[name]) == len(parsed)
        (out / f"log-{name}.jsonl").write_text("\n".join(raw) + "\n")
    # One SERVER span per request, ours, by route template (ADR 0091, 0208): no second one from
    # FastAPI's native telemetry, which records the raw path, the status link's token in it.
    registrations = [s for s in spans["intake"] if s["name"] == "POST /api/v1/requests"]
    assert len(registrations) == 1, [s["attributes"] for s in registrations]
    leaked = [s["name"] for n in SERVICES for s in spans[n] if status_token in json.dumps(s)]
    assert leaked == [], f"the status link's token is in spans: {leaked}"
    # One trace from the registration's HTTP span in intake to the call's message in notify.
    registration = registrations[0]
    trace = registration["context"]["trace_id"]

    def traced(service: str, prefix: str) -> bool:
        return any(
            s["name"].startswith(prefix) and s["context"]["trace_id"] == trace
            for s in spans[service]
        )

    assert traced("queue", f"process giliran.{SITE}.request.submitted")
    assert traced("notify", f"process giliran.{SITE}.ticket.called")
    assert traced("reporting", f"process giliran.{SITE}.ticket.completed")
    # The citizen's id is in every service's log, with the trace id beside it.
    for name in SERVICES:
        mine = [r for r in records[name] if r.get("correlation_id") == CITIZEN_REQUEST_ID]
        assert mine, f"no {name} log line carries the citizen's request id"
        assert all(r["service"] == name and r["level"] and r["time"] for r in mine)
        assert {f"0x{r['trace_id']}" for r in mine} == {trace}, name
    # Trace and span ids are random hex: a run of digits in one can look like a phone number.
    scrubbed = tmp_path / "scrubbed"
    scrubbed.mkdir()
    for path in logs.glob("*.log"):
        text = TRACE_ID_FIELD.sub(r'"\1": "<id>"', path.read_text())
        (scrubbed / path.name).write_text(RANDOM_HEX.sub("<id>", text))
    assert personal_data_in(scrubbed.glob("*.log")) == []
