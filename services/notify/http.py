"""HTTP entrypoints of notify: the delivery log."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from services.notify.store import DeliveryStore


class DeliveryView(BaseModel):
    delivery_id: str
    ticket_id: str | None
    request_id: str | None
    cause_type: str
    channel: str
    recipient: str
    template: str
    language: str
    text: str
    segments: int
    status: str
    created_at: datetime
    sent_at: datetime | None = None


class DeliveryList(BaseModel):
    deliveries: list[DeliveryView]


def router(store: DeliveryStore) -> APIRouter:
    api = APIRouter(prefix="/api/v1", tags=["deliveries"])

    @api.get("/deliveries", response_model=DeliveryList)
    async def deliveries(ticket_id: Annotated[str, Query(max_length=128)]) -> DeliveryList:
        docs = await store.list_for_ticket(ticket_id)
        return DeliveryList(
            deliveries=[
                DeliveryView(
                    delivery_id=d["_id"],
                    **{k: v for k, v in d.items() if k in DeliveryView.model_fields},
                )
                for d in docs
            ]
        )

    return api
