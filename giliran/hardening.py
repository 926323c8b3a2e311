"""ASGI middleware every service runs: security headers, a request body cap, same-origin posts."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Collection, Iterable
from urllib.parse import urlsplit

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# No inline script anywhere (pages load their JS from /static/); inline styles stay allowed
# because the pages' small <style> blocks carry no executable content.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; "
    "object-src 'none'; frame-ancestors {ancestors}"
)
# Waiting-room boards are sometimes shown inside a signage page served by the same box; every
# other page refuses to be framed at all (clickjacking a counter console or an admin form).
FRAMEABLE = ("/board",)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CROSS_ORIGIN_ID = (
    "Akses ditolak: formulir ini dikirim dari situs lain. Buka halaman Giliran lalu kirim lagi."
)
CROSS_ORIGIN_EN = "Access denied: this form was sent from another site. Open the Giliran page."


# Headers through which a proxy (or anyone pretending to be one) names the client.
FORWARDING_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip")


def forwarded(connection: HTTPConnection) -> bool:
    """The request names its client in a forwarding header: its client address (what uvicorn
    made of that header, for a trusted proxy) is a value someone sent, not the TCP peer."""
    return any(connection.headers.get(name) for name in FORWARDING_HEADERS)


def address_key(client: str) -> str:
    """What a per-address limit counts: an IPv4 address as it is, an IPv6 address by its /64.
    One subscriber line gets a whole /64, so a limit on single IPv6 addresses holds back nobody:
    a guesser takes a fresh address for each attempt."""
    try:
        ip = ipaddress.ip_address(client)
    except ValueError:
        return client
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def client_key(connection: HTTPConnection) -> str | None:
    """The client's address as per-address limits count it (`address_key`), None if unknown."""
    return address_key(connection.client.host) if connection.client else None


def limited_address(connection: HTTPConnection, exempt: Collection[str]) -> str | None:
    """The address a request's rate limits count under, or None when it is exempt. Only the
    real TCP peer can be exempt (the box itself, a kiosk on it): a forwarded value never is, so
    a client behind a proxy that passes `X-Forwarded-For: 127.0.0.1` through (with
    GILIRAN_FORWARDED_ALLOW_IPS="*") is counted under 127.0.0.1 like anyone else (ADR 0114)."""
    host = connection.client.host if connection.client else None
    if host is None:
        return None
    if host in exempt and not forwarded(connection):
        return None
    return address_key(host)


def _made_headers(frameable: bool) -> tuple[tuple[bytes, bytes], ...]:
    ancestors = "'self'" if frameable else "'none'"
    return (
        (b"content-security-policy", CSP.format(ancestors=ancestors).encode()),
        # Status links carry their token in the path: never sent to another site. (Not
        # no-referrer: Chromium then sends "Origin: null" with our own forms.)
        (b"referrer-policy", b"same-origin"),
        (b"x-content-type-options", b"nosniff"),
        (b"cross-origin-opener-policy", b"same-origin"),
        (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
        (b"x-frame-options", b"SAMEORIGIN" if frameable else b"DENY"),
    )


# Made once: the headers depend only on whether the path may be framed (ADR 0208).
_FRAMEABLE_HEADERS = _made_headers(frameable=True)
_UNFRAMEABLE_HEADERS = _made_headers(frameable=False)


def _headers(path: str) -> tuple[tuple[bytes, bytes], ...]:
    return _FRAMEABLE_HEADERS if path.startswith(FRAMEABLE) else _UNFRAMEABLE_HEADERS


class SecurityHeaders:
    """Adds the headers to every HTTP response, streaming ones included (pure ASGI: server push
    keeps flowing, which Starlette's BaseHTTPMiddleware would buffer)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = _headers(str(scope.get("path", "")))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.get("headers", [])
                present = {name.lower() for name, _ in headers}  # a header the app set wins
                message["headers"] = [*headers, *(h for h in extra if h[0] not in present)]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyLimit:
    """Refuses request bodies over `limit` bytes with a bilingual 413, whether the client
    announced the length or streams it chunked."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope.get("headers", []))
        if declared is not None and declared > self.limit:
            await self._refuse(send)
            return
        seen = 0
        started = False
        refused = False

        async def counted() -> Message:
            nonlocal seen, started, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    # Answer now and tell the app the client left: whatever it makes of that
                    # (FastAPI: a 400 for an unreadable body) is never sent.
                    refused = True
                    if not started:
                        started = True
                        await self._refuse(send)
                    return {"type": "http.disconnect"}
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            if refused:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, counted, watched)

    async def _refuse(self, send: Send) -> None:
        await _answer(
            send,
            413,
            "body_too_large",
            f"Isi permintaan terlalu besar (maksimum {self.limit} bita).",
            f"The request body is too large (at most {self.limit} bytes).",
        )


class SameOrigin:
    """Refuses a state-changing request that a browser sent from another origin (403): CSRF
    protection for every form, the citizens' anonymous ones included, without a cookie. Clients
    that are not browsers send no Origin and are judged by their credentials alone."""

    def __init__(self, app: ASGIApp, public_urls: Iterable[str] = ()) -> None:
        self.app = app
        # Behind a reverse proxy the Host may be rewritten: the public address counts as ours.
        self.ours = {urlsplit(url).netloc.encode() for url in public_urls if url}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        origin = headers.get(b"origin")
        ours = {*self.ours, headers.get(b"host", b""), headers.get(b"x-forwarded-host", b"")}
        ours.discard(b"")  # an opaque origin ("null": sandboxed frames) matches nothing
        if origin is not None and urlsplit(origin.decode("latin-1")).netloc.encode() not in ours:
            await _answer(send, 403, "cross_origin", CROSS_ORIGIN_ID, CROSS_ORIGIN_EN)
            return
        await self.app(scope, receive, send)


async def _answer(send: Send, status: int, code: str, message_id: str, message_en: str) -> None:
    """A bilingual JSON refusal sent before the app sees the request."""
    body = json.dumps(
        {"error": {"code": code, "message_id": message_id, "message_en": message_en}}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *_headers(""),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _content_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
