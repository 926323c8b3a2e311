"""HTTP API of intake: register, check in, follow a request (JSON and server push), sessions,
the survey."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from giliran.auth import Principal, Role, requires, wrong_site
from giliran.contracts import Channel
from giliran.contracts.subjects import SITE_PATTERN
from giliran.hardening import client_key, limited_address
from giliran.push import Changes, limited_stream
from services.intake import sessions
from services.intake.errors import UnknownSite
from services.intake.handlers import Intake, Scores, SubmitRequest, complete
from services.intake.models import ResendLink
from services.intake.status import QueueStatus
from services.intake.views import (
    RequestView,
    SessionView,
    StatusView,
    request_view,
    session_view,
    status_view,
)

Site = Annotated[str, Path(pattern=SITE_PATTERN, max_length=63)]
# Who may mark a citizen arrived: the site's kiosk, or its staff at a counter.
CheckInDesk = Annotated[
    Principal, Depends(requires(Role.KIOSK, Role.OFFICER, Role.SUPERVISOR, Role.ADMIN))
]
Token = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{16,64}$")]
HEARTBEAT_SECONDS = 15.0


class CheckIn(BaseModel):
    model_config = ConfigDict(str_strip_whitespace=True, extra="forbid")

    code: str = Field(
        min_length=6, max_length=300, description="6-character code, or the scanned QR link"
    )


class CheckInView(BaseModel):
    checked_in: bool = Field(description="False: the request was already checked in")
    request: RequestView


class LinkResent(BaseModel):
    """The one answer to a resend request, whatever matched."""

    message_id: str = (
        "Jika NIK dan nomor HP/e-mail itu cocok dengan pendaftaran aktif, tautan status "
        "dikirim ulang ke nomor HP/e-mail yang didaftarkan dalam beberapa menit."
    )
    message_en: str = (
        "If the NIK and that phone/e-mail match an active registration, the status link is "
        "sent again to the registered phone/e-mail within a few minutes."
    )


class Feedback(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: str = Field(pattern=r"^[A-Za-z0-9_-]{16,64}$")
    ticket_id: str = Field(min_length=1, max_length=128)
    scores: Scores


@dataclass
class Links:
    public_url: str

    def base(self, request: Request) -> str:
        return self.public_url.rstrip("/") or str(request.base_url).rstrip("/")

    def api(self, request: Request, request_id: str) -> str:
        return f"{self.base(request)}/api/v1/requests/{request_id}"

    def page(self, request: Request, token: str) -> str:
        return f"{self.base(request)}/s/{token}"


@dataclass
class Status:
    """The status view, shared by the JSON API, the server push and the page."""

    intake: Intake
    queue: QueueStatus
    changes: Changes

    async def view(self, token: str, *, issuing: bool = False) -> StatusView:
        """`issuing`: for a slip printed right after a kiosk's registration (ADR 0228). Its
        wait may have ended on the queue's notice before intake's ticket consumer wrote the
        ticket into the request, so the queue is asked even when intake holds none yet, and
        the ticket it answers is shown: the number comes from the queue's store, never from
        the notice."""
        doc = await self.intake.by_token(token)
        site = self.intake.site(doc["site"])
        ticket_ids = list((doc.get("tickets") or {}).keys())
        awaited = issuing and not complete(doc) and not doc.get("cancelled_at")
        ask = bool(ticket_ids) or awaited
        live = await self.queue.tickets(doc["site"], doc["_id"]) if ask else None
        answered = await self.intake.store.answered(doc) if ticket_ids else set()
        return status_view(doc, site, live, answered)


Staff = Annotated[
    Principal, Depends(requires(Role.OFFICER, Role.SUPERVISOR, Role.ADMIN, site_from=None))
]


def router(intake: Intake, status: Status, links: Links, *, wait_seconds: float) -> APIRouter:
    api = APIRouter(prefix="/api/v1", tags=["citizen"])

    def view_of(request: Request, doc: dict[str, object], **kw: object) -> RequestView:
        return request_view(
            doc,
            intake.site(str(doc["site"])),
            links.api(request, str(doc["_id"])),
            links.page(request, str(doc["token"])),
            **kw,  # type: ignore[arg-type]
        )

    @api.post(
        "/requests",
        status_code=201,
        response_model=RequestView,
        responses={
            202: {"model": RequestView, "description": "Stored; tickets not issued yet"},
            403: {"description": "Channel kiosk/counter without a kiosk/staff sign-in there"},
            409: {"description": "Quota or slot full; or this NIK already holds a request"},
            422: {"description": "Invalid input, or more services than one visit allows"},
            429: {"description": "Too many registrations from this address or phone"},
        },
    )
    async def submit(body: SubmitRequest, request: Request) -> JSONResponse:
        """Register. Channel `kiosk` needs a kiosk's sign-in (token or session) at the site,
        channel `counter` an officer's; a NIK already registered is refused (409) without a
        word about the request that holds it: see POST /requests/resend-link."""
        client = limited_address(request, intake.limits.exempt)
        # Only a channel that needs a sign-in looks for one: a citizen's browser may carry an
        # officer's session cookie, whose CSRF check an online registration must not face.
        online = body.channel is Channel.ONLINE
        who = None if online else await request.app.state.auth.principal(request)
        result = await intake.submit(body, client, who)
        doc = result.doc
        if doc.get("arrived", True):
            doc = await intake.wait_for_tickets(doc["_id"], wait_seconds, doc)
        else:
            # A booking: numbers are issued ahead; waiting briefly shows them on the receipt.
            doc = await intake.wait_for_tickets(doc["_id"], min(wait_seconds, 1.0), doc)
        view = view_of(request, doc, warnings=result.warnings)
        complete = len(view.tickets) >= len(view.services)
        code = 201 if complete else 202
        return JSONResponse(
            view.model_dump(mode="json"), status_code=code, headers={"Location": view.status_url}
        )

    @api.get("/requests/{request_id}", response_model=RequestView)
    async def get_request(
        request: Request, request_id: Annotated[str, Path(max_length=64)], who: Staff
    ) -> Response:
        """For staff: a request id travels on the bus and in logs, so it opens nothing for a
        citizen (theirs is the unguessable /s/<token> link)."""
        doc = await intake.get(request_id)
        if not who.at(str(doc["site"])):
            raise wrong_site(who, str(doc["site"]))
        accept = request.headers.get("accept", "")
        # A status link opened in a phone's browser (notify sends this one) shows the page.
        if accept.startswith("text/html"):
            return RedirectResponse(links.page(request, doc["token"]), status_code=303)
        return JSONResponse(view_of(request, doc).model_dump(mode="json"))

    @api.get("/status/{token}", response_model=StatusView)
    async def get_status(token: Token) -> StatusView:
        return await status.view(token)

    @api.get("/status/{token}/stream")
    async def stream_status(token: Token, request: Request) -> Response:
        """Server push (SSE): the status now, again within moments of each ticket event, and
        every 15 s anyway (positions move as others are called)."""
        doc = await intake.by_token(token)
        request_id = doc["_id"]

        async def events() -> AsyncIterator[str]:
            seen = -1
            while not await request.is_disconnected():
                version = status.changes.version(request_id)
                view = await status.view(token)
                yield f"event: status\ndata: {view.model_dump_json()}\n\n"
                seen = version
                await status.changes.wait(request_id, seen, HEARTBEAT_SECONDS)
                await asyncio.sleep(0.05)  # one update for a burst of events

        # The status link is the citizen's credential: a few tabs, not thousands.
        return limited_stream(request, request.app.state.runtime.streams, token, events)

    @api.post(
        "/requests/resend-link",
        status_code=202,
        response_model=LinkResent,
        responses={429: {"description": "Too many link requests from this address or NIK"}},
    )
    async def resend_link(body: ResendLink, request: Request) -> LinkResent:
        """Send the status link again to the phone/e-mail registered with the request. The
        answer is the same whether or not the NIK and contact matched an active request: the
        link itself only ever goes to the registered contact (through notify)."""
        client = client_key(request)
        await intake.request_link(body, client)
        return LinkResent()

    @api.post(
        "/sites/{site}/check-in",
        response_model=CheckInView,
        responses={
            401: {"description": "Not signed in: check-in happens at the kiosk or a counter"},
            403: {"description": "Signed in for another site, or not a kiosk or counter role"},
            404: {"description": "Code unknown or not valid now (one answer for both)"},
            429: {"description": "Too many attempts from this address, or wrong codes at the site"},
        },
    )
    async def check_in(
        site: Site, body: CheckIn, request: Request, who: CheckInDesk
    ) -> CheckInView:
        """Only at the office: the site's kiosk or a counter's officer checks a citizen in (ADR
        0120), so nobody can mark themselves arrived from home with their own code. Codes stay
        limited per address (the site's kiosk aside) and wrong codes per site (ADR 0101)."""
        client = client_key(request)
        doc, changed = await intake.check_in(site, body.code, client, who)
        return CheckInView(checked_in=changed, request=view_of(request, doc))

    @api.post("/feedback", status_code=201)
    async def feedback(body: Feedback) -> dict[str, str]:
        stored = await intake.submit_feedback(body.token, body.ticket_id, body.scores)
        return {"feedback_id": stored["_id"], "status": "recorded"}

    @api.get("/sites/{site}/services")
    async def services(site: Site) -> list[dict[str, object]]:
        found = intake.catalogue.site(site)
        if found is None:
            raise UnknownSite(site)
        return [
            {
                "code": s.code,
                "prefix": s.prefix,
                "name": s.name.model_dump(),
                "free": s.free,
                "cost": {"id": s.cost("id"), "en": s.cost("en")},
                "fee_idr": s.fee.amount_idr if s.fee else 0,
                "agency": s.agency,
                "requires_nik": s.requires_nik,
                "documents": [d.model_dump() for d in s.documents],
                # Admission: minutes at a counter, places a session (before admins' changes),
                # and this service's online registration and check-in rule.
                "minutes": s.minutes,
                "quota": found.quota_of(s),
                "admission": found.admission_for(s).model_dump(mode="json"),
            }
            for s in found.services
        ]

    @api.get("/sites/{site}/sessions", response_model=list[SessionView])
    async def next_sessions(
        site: Site, days: Annotated[int, Query(ge=1, le=370)] = 30
    ) -> list[SessionView]:
        """The sessions ahead (opens/closes in the site's local time, WIB), with whether online
        pre-registration is open for each."""
        spec = intake.site(site)
        now = intake.clock()
        rows = []
        for w in await intake.upcoming(site, days):
            opens, closes = sessions.registration_window(w, spec.admission, spec.timezone)
            rows.append(
                session_view(
                    w,
                    spec.timezone,
                    opens <= now < closes,
                    spec,
                    now,
                    await intake.places_left(spec, w),
                )
            )
        return rows

    @api.get("/sites/{site}/challenge")
    async def challenge(site: Site) -> dict[str, object]:
        """A proof-of-work challenge for the registration form (ADR 0122): find a decimal
        `nonce` whose SHA-256 of `challenge:nonce` starts with `bits` zero bits, and send both
        as `proof` with the registration. Needed once an address registered a few times."""
        text, bits = intake.challenge(site)
        return {"challenge": text, "bits": bits, "algorithm": "sha256(challenge + ':' + nonce)"}

    @api.get("/sites/{site}/sessions/{session_id}/slots")
    async def slots(
        site: Site, session_id: Annotated[str, Path(pattern=r"^[a-z0-9-]{1,80}$")]
    ) -> list[dict[str, object]]:
        """Appointment slots of a bookable session with the places left in each."""
        spec = intake.site(site)
        window = sessions.session_for_booking(
            spec, session_id, intake.clock(), intake.holidays, await intake.overrides(site)
        )
        used = {d["what"]: int(d["used"]) for d in await intake.store.quotas_of(window.session_id)}
        zone = spec.timezone
        rows: list[dict[str, object]] = []
        for start in sessions.slots(window, spec.booking.slot_minutes):
            key = sessions.slot_key(start, zone)
            rows.append(
                {
                    "appointment_at": start.isoformat(),
                    "local": f"{key[:2]}:{key[2:]}",
                    "remaining": max(spec.booking.slot_capacity - used.get(f"slot-{key}", 0), 0),
                }
            )
        return rows

    return api
