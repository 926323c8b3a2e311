"""HTTP entrypoints of the queue: counter actions and ticket look-up."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel

from giliran.contracts import TicketView
from giliran.contracts.subjects import SITE_PATTERN
from services.queue.handlers import Queue


class TicketEnvelope(BaseModel):
    ticket: TicketView


def router(queue: Queue) -> APIRouter:
    api = APIRouter(prefix="/api/v1", tags=["counter"])

    @api.post(
        "/sites/{site}/counters/{counter}/call-next",
        response_model=TicketEnvelope,
        responses={204: {"description": "Nothing is waiting for this counter"}},
    )
    async def call_next(
        site: Annotated[str, Path(pattern=SITE_PATTERN, max_length=63)],
        counter: Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,32}$")],
    ) -> TicketEnvelope | Response:
        ticket = await queue.call_next(site, counter)
        if ticket is None:
            return Response(status_code=204)
        return TicketEnvelope(ticket=ticket)

    @api.post("/tickets/{ticket_id}/complete", response_model=TicketEnvelope)
    async def complete(ticket_id: Annotated[str, Path(max_length=128)]) -> TicketEnvelope:
        return TicketEnvelope(ticket=await queue.complete(None, ticket_id))

    @api.get("/tickets/{ticket_id}", response_model=TicketEnvelope)
    async def get_ticket(ticket_id: Annotated[str, Path(max_length=128)]) -> TicketEnvelope:
        return TicketEnvelope(ticket=await queue.ticket(ticket_id))

    return api
