"""HTTP entrypoints of the queue: counter actions, ticket and request look-ups, the board's data
and its server push, and the two pages (counter console, waiting-room board)."""

from __future__ import annotations

from pathlib import Path as FilePath
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from prometheus_client import Gauge
from pydantic import BaseModel, Field

from giliran.auth import AuditLog, Principal, Role, requires, wrong_site
from giliran.catalogue import Text
from giliran.contracts import CounterAction, CounterView, Outcome, TicketAction, TicketView
from giliran.contracts.events import ServiceCode
from giliran.contracts.subjects import SITE_PATTERN
from giliran.push import credential_of, sse_response
from services.queue.board import BoardView, board_from_memory, call_shown
from services.queue.desk import Desk
from services.queue.domain import TicketNotFound
from services.queue.handlers import Queue
from services.queue.store import audit_facts, ticket_view
from services.queue.subscribers import run_counter_action, run_ticket_action
from services.queue.voice import Announcer

PAGES = Jinja2Templates(directory=FilePath(__file__).parent / "pages")
WAITING_SHOWN = 30

# As long as the contracts allow (SiteSlug): a shorter one failed inside the handler (500).
Site = Annotated[str, Path(pattern=SITE_PATTERN, min_length=2, max_length=63)]
CounterPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,32}$")]
TicketPath = Annotated[str, Path(min_length=1, max_length=128)]


class TicketEnvelope(BaseModel):
    ticket: TicketView


class CounterEnvelope(BaseModel):
    counter: CounterView


class CurrentTicket(BaseModel):
    ticket: TicketView
    nik_masked: str | None
    service_name: Text
    documents: list[Text]


class CounterDetail(BaseModel):
    """Everything a counter console shows."""

    counter: CounterView
    name: Text
    current: CurrentTicket | None
    waiting: list[TicketView]
    transfer_to: list[ServiceCode]
    no_show_after_recalls: int


class OpenBody(BaseModel):
    services: list[ServiceCode] | None = Field(default=None, min_length=1, max_length=20)
    session_id: str | None = Field(default=None, max_length=64)


class ActionBody(BaseModel):
    to_service: ServiceCode | None = None
    reason: str | None = Field(default=None, max_length=200)
    outcome: Outcome = Outcome.SERVED


# Serving citizens is the officers' and supervisors' work, at their own site only; admins
# administer but do not serve (docs/security.md, roles).
Officer = Annotated[Principal, Depends(requires(Role.OFFICER, Role.SUPERVISOR))]
OfficerAnySite = Annotated[
    Principal, Depends(requires(Role.OFFICER, Role.SUPERVISOR, site_from=None))
]
ConsoleUser = Annotated[Principal, Depends(requires(Role.OFFICER, Role.SUPERVISOR, page=True))]
Staff = Annotated[
    Principal,
    Depends(requires(Role.OFFICER, Role.SUPERVISOR, Role.ADMIN, Role.AUDITOR, site_from=None)),
]
# A request's tickets carry their priority reason (pregnant, disabled...): the staff who serve
# the site, as intake's request look-up; never a display device or a kiosk.
RequestReader = Annotated[Principal, Depends(requires(Role.OFFICER, Role.SUPERVISOR, Role.ADMIN))]
# A board shows numbers only: a display device's token, or staff of that site (a kiosk token
# submits requests and reads nothing).
BOARD_VIEWERS = (Role.DISPLAY, Role.OFFICER, Role.SUPERVISOR, Role.ADMIN, Role.AUDITOR)
Viewer = Annotated[Principal, Depends(requires(*BOARD_VIEWERS))]
BoardViewer = Annotated[Principal, Depends(requires(*BOARD_VIEWERS, page=True))]

TicketVerb = Literal["call", "recall", "start", "complete", "no-show", "transfer", "cancel"]


def router(
    queue: Queue,
    desk: Desk,
    audit: AuditLog,
    boards: Gauge | None = None,
    announcer: Announcer | None = None,
) -> APIRouter:
    api = APIRouter(tags=["counter"])

    async def before(ticket_id: str) -> dict[str, object] | None:
        # The ticket as this process last wrote it, if it did (services.queue.memory).
        remembered = queue.memory.ticket(ticket_id)
        return audit_facts(remembered or await queue.store.get(ticket_id))

    @api.post(
        "/api/v1/sites/{site}/counters/{counter}/call-next",
        response_model=TicketEnvelope,
        responses={204: {"description": "Nothing is waiting for this counter"}},
    )
    async def call_next(
        site: Site, counter: CounterPath, who: Officer
    ) -> TicketEnvelope | Response:
        # The record travels with the action's own writes (ADR 0106): none when nothing changed.
        with audit.acting(who, "call_next", site, f"counter:{counter}"):
            ticket = await desk.call_next(site, counter)
        if ticket is None:
            return Response(status_code=204)
        return TicketEnvelope(ticket=ticket)

    @api.post("/api/v1/sites/{site}/counters/{counter}/{action}", response_model=CounterEnvelope)
    async def counter_action(
        site: Site,
        counter: CounterPath,
        action: Literal["open", "pause", "close"],
        who: Officer,
        body: Annotated[OpenBody | None, Body()] = None,
    ) -> CounterEnvelope:
        command = CounterAction(
            action=action,
            site=site,
            counter=counter,
            services=body.services if body else None,
            session_id=body.session_id if body else None,
        )
        was = (await desk.counter(site, counter)).model_dump(mode="json")
        with audit.acting(who, f"counter_{action}", site, f"counter:{counter}", was):
            view = await run_counter_action(desk, command)
        return CounterEnvelope(counter=view)

    @api.get("/api/v1/sites/{site}/counters/{counter}", response_model=CounterDetail)
    async def counter_detail(site: Site, counter: CounterPath, _: Officer) -> CounterDetail:
        return await _detail(queue, desk, site, counter)

    @api.post(
        "/api/v1/sites/{site}/counters/{counter}/tickets/{ticket_id}/{verb}",
        response_model=TicketEnvelope,
    )
    async def ticket_action(
        site: Site,
        counter: CounterPath,
        ticket_id: TicketPath,
        verb: TicketVerb,
        who: Officer,
        body: Annotated[ActionBody | None, Body()] = None,
    ) -> TicketEnvelope:
        body = body or ActionBody()
        was = await before(ticket_id)
        action = "no_show" if verb == "no-show" else verb
        if verb == "complete":
            with audit.acting(who, action, site, f"ticket:{ticket_id}", was):
                done = await desk.complete(site, ticket_id, counter, body.outcome)
            return TicketEnvelope(ticket=done)
        command = TicketAction(
            action=action,
            site=site,
            counter=counter,
            ticket_id=ticket_id,
            to_service=body.to_service,
            reason=body.reason,
        )
        with audit.acting(who, action, site, f"ticket:{ticket_id}", was):
            done = await run_ticket_action(desk, command)
        return TicketEnvelope(ticket=done)

    @api.post("/api/v1/sites/{site}/tickets/{ticket_id}/recheck-in", response_model=TicketEnvelope)
    async def recheck_in(site: Site, ticket_id: TicketPath, who: Officer) -> TicketEnvelope:
        """A no-show back within the grace period rejoins the line (with the stated penalty)."""
        was = await before(ticket_id)
        with audit.acting(who, "recheck_in", site, f"ticket:{ticket_id}", was):
            done = await desk.recheck_in(site, ticket_id)
        return TicketEnvelope(ticket=done)

    @api.post("/api/v1/tickets/{ticket_id}/complete", response_model=TicketEnvelope)
    async def complete(
        ticket_id: TicketPath,
        who: OfficerAnySite,
    ) -> TicketEnvelope:
        # No site in the path: the ticket's own site decides (an officer of another site is
        # refused as if the path had named it). A ticket's site never changes, so the ticket as
        # this process last wrote it tells as well as the store (services.queue.memory).
        doc = queue.memory.ticket(ticket_id) or await queue.store.get(ticket_id)
        if doc is None:
            raise TicketNotFound(ticket_id)
        site = str(doc["site"])
        if not who.at(site):
            raise wrong_site(who, site)
        was = audit_facts(doc)
        with audit.acting(who, "complete", site, f"ticket:{ticket_id}", was):
            done = await desk.complete(None, ticket_id)
        return TicketEnvelope(ticket=done)

    @api.get("/api/v1/tickets/{ticket_id}", response_model=TicketEnvelope)
    async def get_ticket(ticket_id: TicketPath, who: Staff) -> TicketEnvelope:
        doc = await queue.store.get(ticket_id)
        if doc is None:
            raise TicketNotFound(ticket_id)
        site = str(doc["site"])
        if not who.at(site):  # no site in the path: the ticket's own site decides
            raise wrong_site(who, site)
        return TicketEnvelope(ticket=await queue.with_place(doc))

    @api.get("/api/v1/sites/{site}/requests/{request_id}", response_model=list[TicketView])
    async def request_status(
        site: Site,
        request_id: Annotated[str, Path(max_length=64)],
        _: RequestReader,
    ) -> list[TicketView]:
        return await queue.request_status(site, request_id)

    async def board(site: str) -> BoardView:
        definition = queue.site(site)
        session = await queue.current_session(definition.site)
        return await board_from_memory(queue.memory, definition, session, queue.clock())

    @api.get("/api/v1/sites/{site}/board", response_model=BoardView)
    async def board_now(site: Site, _: Viewer) -> BoardView:
        return await board(site)

    @api.get("/api/v1/sites/{site}/board/stream")
    async def board_stream(site: Site, request: Request, who: Viewer) -> Response:
        """Server push (SSE): the board now, then again within moments of every change, for
        as long as the viewer's credential holds (a revoked board TV gets nothing more)."""
        queue.site(site)
        accounts = request.app.state.auth.store

        async def still_allowed() -> bool:
            return bool(await accounts.still_valid(who))

        return sse_response(
            request,
            queue.changes,
            site,
            lambda: board(site),
            event="board",
            connections=boards.labels(site) if boards is not None else None,
            still_allowed=still_allowed,
            limits=request.app.state.runtime.streams,
            credential=credential_of(request),
        )

    voice = announcer or Announcer()

    @api.get(
        "/api/v1/sites/{site}/calls/{ticket_id}/announcement.wav",
        response_class=Response,
        responses={200: {"content": {"audio/wav": {}}, "description": "Chime, then the call"}},
    )
    async def announcement(site: Site, ticket_id: TicketPath, _: Viewer) -> Response:
        """A call as the box says it (ADR 0146), for boards whose browser has no Indonesian
        voice. Only a ticket of this site that has been called: nothing else can be made to
        speak, so what a board may ask for is bounded by the calls of the day."""
        doc = await queue.store.get(ticket_id)
        if doc is None or doc["site"] != site or not doc.get("counter") or not doc.get("called_at"):
            raise TicketNotFound(ticket_id)
        call = call_shown(queue.site(site), doc)
        return Response(
            await voice.wav(call.spoken),
            media_type="audio/wav",
            # The same ticket at the same counter is the same sentence: a recall replays it.
            headers={"Cache-Control": "private, max-age=86400"},
        )

    @api.get("/board", response_class=HTMLResponse, include_in_schema=False)
    async def board_page(
        request: Request,
        site: Annotated[str, Query(pattern=SITE_PATTERN, max_length=63)],
        _: BoardViewer,
    ) -> HTMLResponse:
        return PAGES.TemplateResponse(request, "board.html", {"view": await board(site)})

    @api.get("/console", response_class=HTMLResponse, include_in_schema=False)
    async def console_page(
        request: Request,
        site: Annotated[str, Query(pattern=SITE_PATTERN, max_length=63)],
        counter: Annotated[str, Query(pattern=r"^[A-Za-z0-9_-]{1,32}$")],
        who: ConsoleUser,
    ) -> HTMLResponse:
        definition = queue.site(site)
        detail = await _detail(queue, desk, site, counter)
        names = {s.code: s.name.model_dump() for s in definition.services}
        return PAGES.TemplateResponse(
            request,
            "console.html",
            {
                "site": definition,
                "detail": detail,
                "names": names,
                "who": who,
                "csrf": getattr(request.state, "csrf", ""),
            },
        )

    return api


async def _detail(queue: Queue, desk: Desk, site_slug: str, counter_id: str) -> CounterDetail:
    site = queue.site(site_slug)
    view = await desk.counter(site.site, counter_id)
    definition = site.counter(counter_id)
    assert definition is not None
    current: CurrentTicket | None = None
    if view.current_ticket_id:
        doc = await queue.store.get(view.current_ticket_id)
        if doc is not None:
            service = site.service(doc["service"])
            assert service is not None
            current = CurrentTicket(
                ticket=ticket_view(doc),
                nik_masked=doc.get("nik_masked"),
                service_name=service.name,
                documents=service.documents,
            )
    session = view.session_id or await queue.current_session(site.site)
    waiting = (
        [
            ticket_view(d)
            for d in await queue.store.waiting_list(
                site.site, session, view.services, WAITING_SHOWN
            )
        ]
        if session
        else []
    )
    return CounterDetail(
        counter=view,
        name=definition.name,
        current=current,
        waiting=waiting,
        transfer_to=[
            s.code for s in site.services if current is None or s.code != current.ticket.service
        ],
        no_show_after_recalls=desk.policy.no_show_after_recalls,
    )
