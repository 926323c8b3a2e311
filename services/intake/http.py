"""HTTP entrypoints of intake: register a request, follow it, list a site's services."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from giliran.contracts import TicketView
from giliran.contracts.subjects import SITE_PATTERN
from giliran.privacy import mask_phone
from giliran.store import Document
from services.intake import domain
from services.intake.handlers import Intake, SubmitRequest, tickets_of


class RequestView(BaseModel):
    request_id: str
    site: str
    session_id: str
    services: list[str]
    channel: str
    nik_masked: str | None
    phone_masked: str | None
    status_url: str
    tickets: list[TicketView]
    warnings: list[str] = []
    message_id: str
    message_en: str


def _view(doc: Document, status_url: str, warnings: tuple[str, ...] = ()) -> RequestView:
    tickets = tickets_of(doc)
    complete = len(tickets) >= len(doc["services"])
    numbers = ", ".join(t.number for t in tickets)
    if complete:
        message_id = f"Nomor antrean Anda: {numbers}. Layanan ini GRATIS."
        message_en = f"Your queue number(s): {numbers}. This service is FREE."
    else:
        message_id = "Permohonan diterima; nomor antrean sedang diterbitkan. Buka tautan status."
        message_en = "Request received; your queue number is being issued. Open the status link."
    return RequestView(
        request_id=doc["_id"],
        site=doc["site"],
        session_id=doc["session_id"],
        services=doc["services"],
        channel=doc["channel"],
        nik_masked=doc.get("nik_masked"),
        phone_masked=mask_phone(doc["phone"]) if doc.get("phone") else None,
        status_url=status_url,
        tickets=tickets,
        warnings=list(warnings),
        message_id=message_id,
        message_en=message_en,
    )


def router(intake: Intake, *, public_url: str, wait_seconds: float) -> APIRouter:
    api = APIRouter(prefix="/api/v1", tags=["citizen"])

    def status_url(request: Request, request_id: str) -> str:
        base = public_url.rstrip("/") or str(request.base_url).rstrip("/")
        return f"{base}/api/v1/requests/{request_id}"

    @api.post(
        "/requests",
        status_code=201,
        response_model=RequestView,
        responses={202: {"model": RequestView, "description": "Stored; tickets not issued yet"}},
    )
    async def submit(body: SubmitRequest, request: Request) -> JSONResponse:
        doc, warnings = await intake.submit(body)
        doc = await intake.wait_for_tickets(doc["_id"], wait_seconds)
        view = _view(doc, status_url(request, doc["_id"]), warnings)
        complete = len(view.tickets) >= len(view.services)
        return JSONResponse(
            view.model_dump(mode="json"),
            status_code=201 if complete else 202,
            headers={"Location": view.status_url},
        )

    @api.get("/requests/{request_id}", response_model=RequestView)
    async def get_request(
        request: Request, request_id: Annotated[str, Path(max_length=64)]
    ) -> RequestView:
        doc = await intake.get(request_id)
        return _view(doc, status_url(request, request_id))

    @api.get("/sites/{site}/services")
    async def services(
        site: Annotated[str, Path(pattern=SITE_PATTERN, max_length=63)],
    ) -> list[dict[str, object]]:
        found = intake.catalogue.site(site)
        if found is None:
            raise domain.UnknownSite(site)
        return [
            {
                "code": s.code,
                "prefix": s.prefix,
                "name": s.name.model_dump(),
                "free": s.free,
                "documents": [d.model_dump() for d in s.documents],
            }
            for s in found.services
        ]

    return api
