"""How each gateway answers, with no I/O: a send judged by its body (accepted, refused, retry) and
a delivery report read into receipts. Field names follow each gateway's published documentation
(docs/notify.md lists the sources); every reason is scrubbed of phone numbers before it leaves.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from giliran.privacy import scrub

REASON_CHARS = 200


class Answer(StrEnum):
    ACCEPTED = "accepted"  # handed over: the gateway took it (not yet a delivery)
    REFUSED = "refused"  # the gateway said no (in the body or by status): sending again won't help
    RETRY = "retry"  # busy, rate-limited or down: worth another attempt later


class Outcome(StrEnum):
    """What a delivery report finally says about a message that was accepted."""

    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"


@dataclass(frozen=True)
class Verdict:
    answer: Answer
    gateway_id: str | None = None  # the gateway's message id: what its receipts will name
    reason: str = ""  # scrubbed


@dataclass(frozen=True)
class Receipt:
    gateway_id: str
    outcome: Outcome | None  # None: an intermediate state (sent to the operator, pending)
    reason: str = ""  # scrubbed
    # The business phone number id a WhatsApp Cloud report names (must be ours).
    sender: str | None = None


def reason_of(text: str) -> str:
    """A gateway's words as Giliran keeps them: short, one line, without any phone number."""
    # Scrubbed before it is cut: a number cut in half would no longer look like one.
    return scrub(" ".join(text[: REASON_CHARS * 20].split()))[:REASON_CHARS]


def path(doc: Any, dotted: str) -> Any:
    """`messages.0.status.groupName` in a parsed JSON body; None when any step is missing."""
    here = doc
    for step in dotted.split("."):
        if isinstance(here, list) and step.isdigit() and int(step) < len(here):
            here = here[int(step)]
        elif isinstance(here, dict) and step in here:
            here = here[step]
        else:
            return None
    return here


def _first(value: Any) -> str | None:
    """Fonnte answers ids as a list (one per target); others as a scalar."""
    if isinstance(value, list):
        value = value[0] if value else None
    return None if value is None or value == "" else str(value)


def _json(body: str) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


@dataclass(frozen=True)
class BodyRule:
    """How a generic gateway says yes in a 2xx body: `field` (dotted) holds one of `values`."""

    field: str
    values: Sequence[str]
    reason_field: str | None = None
    id_field: str | None = None


@dataclass(frozen=True)
class ReceiptRule:
    """How a generic gateway's delivery report reads: a list at `items` (or the body itself),
    each with an id and a status taken from the delivered or the undelivered values."""

    id_field: str
    status_field: str
    delivered: Sequence[str]
    undelivered: Sequence[str]
    items: str | None = None
    reason_field: str | None = None


def _status_failure(status: int, body: str) -> Verdict | None:
    text = reason_of(body)
    if status == 429 or status >= 500:
        return Verdict(Answer.RETRY, reason=f"HTTP {status}: {text}")
    return None


# --- sending ---------------------------------------------------------------------------------


def judge_generic(status: int, body: str, success: Sequence[int], rule: BodyRule | None) -> Verdict:
    failed = _status_failure(status, body)
    if failed is not None:
        return failed
    if status not in success:
        return Verdict(Answer.REFUSED, reason=f"HTTP {status}: {reason_of(body)}")
    if rule is None:
        return Verdict(Answer.ACCEPTED)
    doc = _json(body)
    said = path(doc, rule.field)
    gateway_id = _first(path(doc, rule.id_field)) if rule.id_field else None
    if said is not None and str(said).lower() in {v.lower() for v in rule.values}:
        return Verdict(Answer.ACCEPTED, gateway_id)
    why = path(doc, rule.reason_field) if rule.reason_field else None
    return Verdict(
        Answer.REFUSED, reason=f"refused: {reason_of(str(why if why is not None else body))}"
    )


def judge_fonnte(status: int, body: str) -> Verdict:
    """Fonnte `POST /send`: `{"status": true, "id": ["80367170"], "process": "pending", ...}`
    when queued, `{"status": false, "reason": "..."}` when refused — both with HTTP 200."""
    failed = _status_failure(status, body)
    if failed is not None:
        return failed
    doc = _json(body)
    if isinstance(doc, dict) and doc.get("status") is True:
        return Verdict(Answer.ACCEPTED, _first(doc.get("id")))
    why = doc.get("reason") if isinstance(doc, dict) else None
    return Verdict(Answer.REFUSED, reason=f"refused: {reason_of(str(why or body))}")


def judge_zenziva(status: int, body: str) -> Verdict:
    """Zenziva console API (`/reguler/api/sendsms/`, `/wareguler/api/sendWA/`):
    `{"messageId": ..., "to": ..., "status": "1", "text": "Success"}`; any other status is a
    refusal whose `text` says why (it echoes the number in `to`)."""
    failed = _status_failure(status, body)
    if failed is not None:
        return failed
    doc = _json(body)
    if isinstance(doc, dict) and str(doc.get("status")) == "1":
        return Verdict(Answer.ACCEPTED, _first(doc.get("messageId")))
    why = doc.get("text") if isinstance(doc, dict) else None
    return Verdict(Answer.REFUSED, reason=f"refused: {reason_of(str(why or body))}")


# Infobip status groups (groupName): PENDING 1, UNDELIVERABLE 2, DELIVERED 3, EXPIRED 4,
# REJECTED 5; OK 0 on some channels.
INFOBIP_TAKEN = {"PENDING", "DELIVERED", "OK"}
INFOBIP_FAILED = {"UNDELIVERABLE", "EXPIRED", "REJECTED"}


def judge_infobip(status: int, body: str) -> Verdict:
    """Infobip `POST /sms/2/text/advanced`: per message `{"messageId", "status": {"groupName":
    "PENDING", "name": "PENDING_ACCEPTED", ...}}`; a REJECTED group is a refusal even in a 200."""
    failed = _status_failure(status, body)
    if failed is not None:
        return failed
    doc = _json(body)
    message = path(doc, "messages.0")
    group = str(path(message, "status.groupName") or "").upper()
    if status < 300 and group in INFOBIP_TAKEN:
        return Verdict(Answer.ACCEPTED, _first(path(message, "messageId")))
    name = path(message, "status.name") or path(doc, "requestError.serviceException.text")
    return Verdict(Answer.REFUSED, reason=f"refused: {reason_of(str(name or body))}")


# WhatsApp Cloud API error codes that are about pace, not the message (throttling): retried.
WHATSAPP_RETRY_CODES = {4, 80007, 130429, 131048, 131056, 133016}


def judge_whatsapp_cloud(status: int, body: str) -> Verdict:
    """`POST /{phone-number-id}/messages`: `{"messages": [{"id": "wamid...",
    "message_status": "accepted"}]}` when taken; `{"error": {"code", "message", "error_data":
    {"details"}}}` with a 4xx when not."""
    doc = _json(body)
    error = path(doc, "error")
    if isinstance(error, dict):
        code = error.get("code")
        words = path(error, "error_data.details") or error.get("message") or ""
        why = reason_of(f"{code}: {words}")
        if status == 429 or status >= 500 or code in WHATSAPP_RETRY_CODES:
            return Verdict(Answer.RETRY, reason=f"HTTP {status}: {why}")
        return Verdict(Answer.REFUSED, reason=f"refused: {why}")
    failed = _status_failure(status, body)
    if failed is not None:
        return failed
    wamid = _first(path(doc, "messages.0.id"))
    if status < 300 and wamid is not None:
        return Verdict(Answer.ACCEPTED, wamid)
    return Verdict(Answer.REFUSED, reason=f"HTTP {status}: {reason_of(body)}")


# --- delivery reports ------------------------------------------------------------------------


def fonnte_receipts(doc: Any) -> Iterator[Receipt]:
    """Fonnte's message-status webhook posts one JSON object per change: `device`, `id`,
    `stateid`, `status` (sent / pending / invalid / expired ...) and `state` (delivered, read)."""
    if not isinstance(doc, dict) or _first(doc.get("id")) is None:
        return
    gateway_id = _first(doc.get("id")) or ""
    state = str(doc.get("state") or "").lower()
    status = str(doc.get("status") or "").lower()
    if state in ("delivered", "read"):
        yield Receipt(gateway_id, Outcome.DELIVERED)
    elif status in ("invalid", "expired", "url unreachable", "failed"):
        yield Receipt(gateway_id, Outcome.UNDELIVERED, reason_of(status))
    else:
        yield Receipt(gateway_id, None)


def infobip_receipts(doc: Any) -> Iterator[Receipt]:
    """Infobip delivery reports: `{"results": [{"messageId", "to", "status": {"groupName",
    "name"}, "error": {"name"}}]}`; DELIVERED_TO_OPERATOR is not yet the handset."""
    results = path(doc, "results")
    for item in results if isinstance(results, list) else []:
        gateway_id = _first(path(item, "messageId"))
        if gateway_id is None:
            continue
        group = str(path(item, "status.groupName") or "").upper()
        name = str(path(item, "status.name") or "")
        if group == "DELIVERED" and name != "DELIVERED_TO_OPERATOR":
            yield Receipt(gateway_id, Outcome.DELIVERED)
        elif group in INFOBIP_FAILED:
            why = path(item, "error.name") or name
            yield Receipt(gateway_id, Outcome.UNDELIVERED, reason_of(str(why)))
        else:
            yield Receipt(gateway_id, None)


def whatsapp_cloud_receipts(doc: Any) -> Iterator[Receipt]:
    """Webhook `messages` field: `entry[].changes[].value.statuses[]` with `id` (the wamid),
    `status` sent / delivered / read / failed, `recipient_id`, and `errors[]` on failure; the
    value's `metadata.phone_number_id` names the sending number."""
    for entry in path(doc, "entry") or []:
        for change in path(entry, "changes") or []:
            value = path(change, "value")
            sender = _first(path(value, "metadata.phone_number_id"))
            for status in path(value, "statuses") or []:
                gateway_id = _first(path(status, "id"))
                if gateway_id is None:
                    continue
                said = str(path(status, "status") or "").lower()
                if said in ("delivered", "read"):
                    yield Receipt(gateway_id, Outcome.DELIVERED, sender=sender)
                elif said == "failed":
                    error = path(status, "errors.0") or {}
                    why = f"{path(error, 'code')}: {path(error, 'title') or ''}"
                    yield Receipt(gateway_id, Outcome.UNDELIVERED, reason_of(why), sender)
                else:
                    yield Receipt(gateway_id, None, sender=sender)


def generic_receipts(doc: Any, rule: ReceiptRule) -> Iterator[Receipt]:
    items = path(doc, rule.items) if rule.items else doc
    for item in items if isinstance(items, list) else [items]:
        gateway_id = _first(path(item, rule.id_field))
        if gateway_id is None:
            continue
        said = str(path(item, rule.status_field) or "").lower()
        if said in {v.lower() for v in rule.delivered}:
            yield Receipt(gateway_id, Outcome.DELIVERED)
        elif said in {v.lower() for v in rule.undelivered}:
            why = path(item, rule.reason_field) if rule.reason_field else said
            yield Receipt(gateway_id, Outcome.UNDELIVERED, reason_of(str(why or said)))
        else:
            yield Receipt(gateway_id, None)


# --- authenticating a report -----------------------------------------------------------------


def receipt_key(secret: str, channel: str, site: str) -> str:
    """The key a gateway's report URL carries for one channel at one site: a gateway (or a fair
    laptop) holding one site's URL cannot report on another site's messages."""
    mac = hmac.new(secret.encode(), f"{channel}:{site}".encode(), hashlib.sha256)
    return mac.hexdigest()[:32]


def hub_signature(app_secret: str, body: bytes) -> str:
    """`X-Hub-Signature-256` as Meta sends it: `sha256=` + hex HMAC-SHA256 of the raw body."""
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def signature_valid(app_secret: str, body: bytes, header: str | None) -> bool:
    return header is not None and hmac.compare_digest(
        hub_signature(app_secret, body).encode(), header.encode()
    )
