"""A fake WhatsApp Business Platform (Cloud API) on 127.0.0.1: template messages as Meta
documents them, its errors, and status webhooks signed with X-Hub-Signature-256.

`POST /{version}/{phone-number-id}/messages` with `Authorization: Bearer <token>` and a body
`{"messaging_product": "whatsapp", "to", "type": "template", "template": {"name", "language":
{"code"}, "components": [{"type": "body", "parameters": [{"type": "text", "text"}]}]}}` answers
`{"messaging_product": "whatsapp", "contacts": [{"input", "wa_id"}], "messages": [{"id":
"wamid...", "message_status": "accepted"}]}`. Refused as Meta does, with an `error` object
(`message`, `type`, `code`, `error_data.details`, `fbtrace_id`): a wrong token (401, code 190),
an unknown template (404, 132001), a wrong parameter count (400, 132000), free text (400,
131047: outside the customer-service window only templates may be sent), a number not allowed
(400, 131030 — the details echo it, as test numbers' errors do), throttling (`throttle`, 400
code 130429). `send_status` posts a status webhook to the app's callback URL, signed with the app
secret; `verify` performs Meta's GET handshake against it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections import deque
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.gateway import HEALTH_PATH, FakeGateway, Received


class FakeWhatsAppCloud(FakeGateway):
    def __init__(
        self,
        *,
        phone_number_id: str = "106540352242922",
        access_token: str = "EAAG-test-token",
        app_secret: str = "app-secret-0123456789",
        templates: dict[str, int] | None = None,
        blocked: set[str] | None = None,
    ) -> None:
        super().__init__()
        self.phone_number_id = phone_number_id
        self.access_token = access_token
        self.app_secret = app_secret
        # Approved template name -> how many body parameters it takes.
        self.templates = templates if templates is not None else {}
        self.blocked = blocked or set()  # numbers (digits) the business may not message
        self._throttle: deque[int] = deque()
        self._wamids = 0
        self.app.router.routes = [
            Route(HEALTH_PATH, self._healthz, methods=["GET"]),
            Route("/{version}/{phone_id}/messages", self._messages, methods=["POST"]),
        ]

    @property
    def api_url(self) -> str:
        return f"{self.url}/v21.0"

    def throttle(self, n: int = 1) -> None:
        """The next `n` sends are refused for pace (code 130429), as Meta's rate limit does."""
        self._throttle.extend([130429] * n)

    def accepted(self) -> list[Received]:
        return [r for r in self.received if r.status == 200]

    @staticmethod
    def _error(status: int, code: int, message: str, details: str) -> JSONResponse:
        body = {
            "error": {
                "message": message,
                "type": "OAuthException",
                "code": code,
                "error_data": {"messaging_product": "whatsapp", "details": details},
                "fbtrace_id": "AbCdEfGh",
            }
        }
        return JSONResponse(body, status)

    async def _messages(self, request: Request) -> Response:
        body = await request.body()
        try:
            doc: Any = json.loads(body)
        except ValueError:
            doc = None
        record = Received(
            at=0.0,
            wall=0.0,
            path=request.url.path,
            method="POST",
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            form={},
            json=doc,
        )
        self.received.append(record)
        answer = self._decide(request, record, doc)
        record.status = answer.status_code
        return answer

    def _decide(self, request: Request, record: Received, doc: Any) -> Response:
        if request.headers.get("authorization") != f"Bearer {self.access_token}":
            return self._error(401, 190, "Invalid OAuth access token.", "Invalid token")
        if request.path_params["phone_id"] != self.phone_number_id:
            return self._error(400, 100, "Unsupported post request.", "Unknown phone number id")
        if not isinstance(doc, dict) or doc.get("messaging_product") != "whatsapp":
            return self._error(400, 100, "Invalid parameter", "messaging_product is required")
        if self._throttle:
            code = self._throttle.popleft()
            return self._error(400, code, "(#130429) Rate limit hit", "Cloud API throughput")
        to = str(doc.get("to") or "")
        if doc.get("type") != "template":
            return self._error(
                400,
                131047,
                "Re-engagement message",
                "Message failed to send because more than 24 hours have passed since the "
                "customer last replied to this number.",
            )
        template = doc.get("template") or {}
        name = template.get("name")
        if name not in self.templates or not (template.get("language") or {}).get("code"):
            return self._error(
                404, 132001, "Template name does not exist in the translation", str(name)
            )
        parameters = [
            p
            for component in template.get("components") or []
            if component.get("type") == "body"
            for p in component.get("parameters") or []
        ]
        if len(parameters) != self.templates[name] or any(
            p.get("type") != "text" or not p.get("text") for p in parameters
        ):
            return self._error(
                400,
                132000,
                "Number of parameters does not match the expected number of params",
                f"body: number of localizable_params ({len(parameters)}) does not match the "
                f"expected number of params ({self.templates[name]})",
            )
        if to in self.blocked:
            return self._error(
                400,
                131030,
                "Recipient phone number not in allowed list",
                f"Recipient phone number +{to} not in allowed list: add it in the app's "
                "phone number settings",
            )
        self._wamids += 1
        wamid = f"wamid.HBgNNjI4{self._wamids:06d}"
        record.message_id = wamid
        self._answered_2xx.append(record)
        return JSONResponse(
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": to, "wa_id": to}],
                "messages": [{"id": wamid, "message_status": "accepted"}],
            }
        )

    def status_body(
        self,
        wamid: str,
        status: str,
        *,
        recipient: str = "6281234567890",
        phone_number_id: str | None = None,
        error_code: int = 131026,
    ) -> dict[str, Any]:
        """A `messages` webhook with one status (sent / delivered / read / failed)."""
        entry: dict[str, Any] = {
            "id": wamid,
            "status": status,
            "timestamp": "1764990000",
            "recipient_id": recipient,
        }
        if status == "failed":
            entry["errors"] = [
                {
                    "code": error_code,
                    "title": f"Message undeliverable to {recipient}",
                    "message": "Message undeliverable",
                    "error_data": {"details": "Message Undeliverable."},
                }
            ]
        return {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": "102290129340398",
                    "changes": [
                        {
                            "value": {
                                "messaging_product": "whatsapp",
                                "metadata": {
                                    "display_phone_number": "15550783881",
                                    "phone_number_id": phone_number_id or self.phone_number_id,
                                },
                                "statuses": [entry],
                            },
                            "field": "messages",
                        }
                    ],
                }
            ],
        }

    def sign(self, raw: bytes, secret: str | None = None) -> str:
        mac = hmac.new((secret or self.app_secret).encode(), raw, hashlib.sha256)
        return "sha256=" + mac.hexdigest()

    async def send_status(
        self,
        callback_url: str,
        wamid: str,
        status: str,
        *,
        secret: str | None = None,
        raw: bytes | None = None,
        **fields: Any,
    ) -> httpx.Response:
        """POST a status webhook as Meta does: JSON body, `X-Hub-Signature-256` over its raw
        bytes with the app secret (`secret` to sign with another, `raw` to send given bytes)."""
        payload = (
            raw
            if raw is not None
            else json.dumps(self.status_body(wamid, status, **fields)).encode()
        )
        headers = {
            "Content-Type": "application/json",
            "X-Hub-Signature-256": self.sign(payload, secret),
        }
        async with httpx.AsyncClient(timeout=10) as client:
            return await client.post(callback_url, content=payload, headers=headers)

    async def verify(self, callback_url: str, verify_token: str, challenge: str) -> httpx.Response:
        """Meta's webhook verification request."""
        params = {
            "hub.mode": "subscribe",
            "hub.verify_token": verify_token,
            "hub.challenge": challenge,
        }
        async with httpx.AsyncClient(timeout=10) as client:
            return await client.get(callback_url, params=params)
