"""docs/asyncapi.yaml is generated from the FastStream apps; this fails when it is stale."""

from __future__ import annotations

import yaml

from giliran.contracts import EVENT_MODELS
from giliran.settings import REPO_ROOT
from giliran_ops.docs import asyncapi_yaml

DOC = REPO_ROOT / "docs" / "asyncapi.yaml"


def test_committed_asyncapi_matches_the_code() -> None:
    assert DOC.read_text() == asyncapi_yaml(), "docs/asyncapi.yaml is stale: run `make asyncapi`"


def test_asyncapi_documents_the_published_events_and_commands() -> None:
    spec = yaml.safe_load(DOC.read_text())
    addresses = {c["address"] for c in spec["channels"].values()}
    for subject in (
        "giliran.*.request.submitted",
        "giliran.*.ticket.issued",
        "giliran.*.ticket.called",
        "giliran.*.ticket.completed",
        "giliran.*.notification.sent",
        "giliran.*.cmd.queue.call_next",
        "giliran.*.cmd.queue.complete",
    ):
        assert subject in addresses, subject
    schemas = set(spec["components"]["schemas"])
    assert {"Event[TicketCalled]", "Event[RequestSubmitted]", "Event[NotificationSent]"} <= schemas
    minimum = {
        "request.submitted", "request.cancelled", "ticket.issued", "ticket.called",
        "ticket.recalled", "ticket.completed", "ticket.no_show", "ticket.transferred",
        "ticket.cancelled", "counter.opened", "counter.closed", "notification.sent",
        "notification.failed", "feedback.submitted",
    }  # fmt: skip
    assert minimum <= {f"{m.entity}.{m.event}" for m in EVENT_MODELS}
