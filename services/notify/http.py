"""HTTP entrypoints of notify: the delivery log, a per-session summary, and the operator page
with a retry button for messages that failed for good."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Header, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel

from giliran.auth import AuditLog, Principal, Role, requires, wrong_site
from giliran.contracts.subjects import SITE_PATTERN
from giliran.hardening import client_key
from giliran.privacy import without_status_link
from giliran.runtime import from_app_state
from giliran.store import Document, Instant
from services.notify import receipts
from services.notify.handlers import ChannelWorker, DeliveryNotFound, ReceiptTally
from services.notify.store import DeliveryStore

PAGES = Jinja2Templates(directory=Path(__file__).parent / "pages")


class DeliveryView(BaseModel):
    """A delivery as operators see it: the recipient is always masked."""

    delivery_id: str
    channel: str
    medium: str
    recipient: str
    template: str
    status: str
    attempts: int
    cost_units: int
    cause_type: str | None = None
    ticket_id: str | None = None
    request_id: str | None = None
    session_id: str | None = None
    language: str | None = None
    text: str | None = None
    segments: int | None = None
    last_error: str | None = None
    refused: bool = False
    receipt: str | None = None  # delivered | undelivered, when the gateway reported it
    receipt_reason: str | None = None
    created_at: Instant
    sent_at: Instant | None = None


class DeliveryList(BaseModel):
    deliveries: list[DeliveryView]


class ChannelSummary(BaseModel):
    """`sent` counts messages the gateway accepted (handed over); `delivered`/`undelivered`
    those its delivery reports settled; `refused` is the part of `failed` the gateway said no to."""

    channel: str
    sent: int = 0
    delivered: int = 0
    undelivered: int = 0
    failed: int = 0
    refused: int = 0
    sending: int = 0
    dropped: int = 0
    cost_units: int = 0
    last_errors: list[str] = []

    @property
    def unreported(self) -> int:
        """Accepted messages no report has settled (yet, or ever: not every gateway reports)."""
        return self.sent - self.delivered - self.undelivered


class ReceiptAnswer(BaseModel):
    recorded: int
    repeated: int
    pending: int
    unknown: int


class Summary(BaseModel):
    site: str
    session_id: str | None
    channels: list[ChannelSummary]


def _view(doc: Document) -> DeliveryView:
    fields = DeliveryView.model_fields
    view = DeliveryView(delivery_id=doc["_id"], **{k: v for k, v in doc.items() if k in fields})
    # Operators see what was said, not the link that opens the citizen's request (ADR 0115);
    # the text itself is dropped at the contact's purge.
    return view.model_copy(update={"text": without_status_link(view.text)}) if view.text else view


def summarise(site: str, session_id: str | None, docs: list[Document]) -> Summary:
    by_channel: dict[str, ChannelSummary] = {}
    errors: dict[str, list[str]] = defaultdict(list)
    for doc in docs:
        entry = by_channel.setdefault(doc["channel"], ChannelSummary(channel=doc["channel"]))
        status = doc["status"]
        if status in ("sent", "failed", "sending", "dropped"):
            setattr(entry, status, getattr(entry, status) + 1)
        if status == "failed" and doc.get("refused"):
            entry.refused += 1
        if status == "sent" and doc.get("receipt") in ("delivered", "undelivered"):
            setattr(entry, doc["receipt"], getattr(entry, doc["receipt"]) + 1)
        entry.cost_units += int(doc.get("cost_units") or 0)
        if doc.get("last_error") and status != "sent":
            errors[doc["channel"]].append(str(doc["last_error"]))
    for name, entry in by_channel.items():
        entry.last_errors = errors[name][-5:]
    return Summary(
        site=site,
        session_id=session_id,
        channels=sorted(by_channel.values(), key=lambda c: c.channel),
    )


ChannelPath = Annotated[str, PathParam(pattern=r"^[a-z][a-z0-9-]{0,30}$")]
SitePath = Annotated[str, PathParam(pattern=SITE_PATTERN, max_length=63)]

# The delivery log names (masked) recipients and a retry sends a message: supervisors and
# admins, each at their own site(s).
Operator = Annotated[Principal, Depends(requires(Role.SUPERVISOR, Role.ADMIN))]
OperatorAnySite = Annotated[
    Principal, Depends(requires(Role.SUPERVISOR, Role.ADMIN, site_from=None))
]
OperatorPage = Annotated[Principal, Depends(requires(Role.SUPERVISOR, Role.ADMIN, page=True))]


def _own_site(who: Principal, site: str | None) -> str | None:
    """A supervisor of one site asking for every site gets their own."""
    return site if who.at(site or "") else who.site


@dataclass
class Operations:
    """What the delivery log's endpoints work with, made once by the composition root
    (services/notify/app.py) and handed to them through `app.state` (ADR 0183)."""

    store: DeliveryStore
    workers: dict[str, ChannelWorker]
    audit: AuditLog
    # Gateways' delivery reports, per sending address and minute (no account guards them).
    receipts_window: receipts.AddressWindow

    async def find(
        self, site: str | None, session_id: str | None, ticket_id: str | None
    ) -> list[Document]:
        filters: dict[str, Any] = {}
        if ticket_id:
            filters["ticket_id"] = ticket_id
        if site:
            filters["site"] = site
        if session_id:
            filters["session_id"] = session_id
        return await self.store.list(filters)

    async def retry(self, who: Principal, delivery_id: str) -> Document:
        doc = await self.store.get(delivery_id)
        if doc is None or doc["channel"] not in self.workers:
            raise DeliveryNotFound(delivery_id)
        site = str(doc.get("site") or "")
        if not who.at(site):
            raise wrong_site(who, site)
        done = await self.workers[doc["channel"]].retry_failed(delivery_id)
        await self.audit.record(
            who,
            "retry",
            site,
            f"delivery:{delivery_id}",
            {"status": doc.get("status")},
            {"status": done.get("status")},
        )
        return done

    def admit_report(self, request: Request) -> None:
        if not self.receipts_window.admit(client_key(request) or "-"):
            raise receipts.ReceiptsFlooded()


Ops = Annotated[Operations, Depends(from_app_state("operations", Operations))]
api = APIRouter(tags=["deliveries"])


@api.get("/api/v1/deliveries", response_model=DeliveryList)
async def deliveries(
    ops: Ops,
    who: Operator,
    ticket_id: Annotated[str | None, Query(max_length=128)] = None,
    site: Annotated[str | None, Query(max_length=63)] = None,
    session_id: Annotated[str | None, Query(max_length=128)] = None,
) -> DeliveryList:
    docs = await ops.find(_own_site(who, site), session_id, ticket_id)
    return DeliveryList(deliveries=[_view(d) for d in docs])


@api.get("/api/v1/deliveries/summary", response_model=Summary)
async def summary(
    ops: Ops,
    _: Operator,
    site: Annotated[str, Query(max_length=63)],
    session_id: Annotated[str | None, Query(max_length=128)] = None,
) -> Summary:
    return summarise(site, session_id, await ops.find(site, session_id, None))


@api.post("/api/v1/deliveries/{delivery_id}/retry", response_model=DeliveryView)
async def retry_api(
    ops: Ops, delivery_id: Annotated[str, PathParam(max_length=256)], who: OperatorAnySite
) -> DeliveryView:
    return _view(await ops.retry(who, delivery_id))


# --- delivery reports from gateways (no account: a signature or a keyed URL) ------------------


@api.post("/receipts/{channel}/{site}", response_model=ReceiptAnswer, tags=["receipts"])
async def receipt(
    ops: Ops,
    request: Request,
    channel: ChannelPath,
    site: SitePath,
    key: Annotated[str | None, Query(max_length=128)] = None,
    signature: Annotated[str | None, Header(alias="X-Hub-Signature-256")] = None,
) -> ReceiptAnswer:
    """A gateway's delivery report for `site`'s messages on `channel`."""
    ops.admit_report(request)
    tally: ReceiptTally = await receipts.take_report(
        ops.workers, channel, site, await request.body(), signature=signature, key=key
    )
    return ReceiptAnswer(**tally.__dict__)


@api.get("/receipts/{channel}/{site}", response_class=PlainTextResponse, tags=["receipts"])
async def subscribe(
    ops: Ops,
    request: Request,
    channel: ChannelPath,
    site: SitePath,
    mode: Annotated[str | None, Query(alias="hub.mode", max_length=32)] = None,
    token: Annotated[str | None, Query(alias="hub.verify_token", max_length=256)] = None,
    challenge: Annotated[str | None, Query(alias="hub.challenge", max_length=256)] = None,
) -> Response:
    """Meta's webhook verification: echo the challenge to the holder of the verify token."""
    ops.admit_report(request)
    if not receipts.verify_subscription(ops.workers, channel, mode, token) or not challenge:
        raise receipts.ReceiptsRefused()
    return PlainTextResponse(challenge)


@api.get("/operator", response_class=HTMLResponse)
async def operator(
    ops: Ops,
    request: Request,
    who: OperatorPage,
    site: Annotated[str, Query(max_length=63)] = "cikarang-utara",
    session_id: Annotated[str | None, Query(max_length=128)] = None,
) -> HTMLResponse:
    site = _own_site(who, site) or site
    docs = await ops.find(site, session_id, None)
    return PAGES.TemplateResponse(
        request,
        "operator.html",
        {
            "summary": summarise(site, session_id, docs),
            "failed": [_view(d) for d in docs if d["status"] == "failed"],
            "site": site,
            "session_id": session_id or "",
            "who": who,
            "csrf": getattr(request.state, "csrf", ""),
        },
    )


@api.post("/operator/retry")
async def operator_retry(
    ops: Ops,
    who: OperatorAnySite,
    delivery_id: Annotated[str, Form(max_length=256)],
    site: Annotated[str, Form(max_length=63)],
    session_id: Annotated[str, Form(max_length=128)] = "",
) -> RedirectResponse:
    await ops.retry(who, delivery_id)
    target = f"/operator?site={site}" + (f"&session_id={session_id}" if session_id else "")
    return RedirectResponse(target, status_code=303)
