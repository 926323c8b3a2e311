"""A fake SMS/WhatsApp HTTP gateway (Zenziva, Fonnte, Wablas, Infobip style) on 127.0.0.1.

Served by uvicorn inside the test's event loop, so the code under test talks real HTTP to it;
it is an ordinary server, so a notify service running as a separate process can use it too.

Each scope answers in a gateway's documented shape (`respond_as`): `generic` (`{"status": true,
"id": ...}`), `fonnte` (`{"status": true, "id": ["..."], "process": "pending", "target": [...]}`;
a refusal is `{"status": false, "reason": ...}`), `zenziva` (`{"messageId", "to", "status": "1",
"text": "Success"}`; a refusal has another status and says why in `text`) or `infobip`
(`{"bulkId", "messages": [{"messageId", "to", "status": {"groupName": "PENDING", ...}}]}`; a
refusal is the REJECTED group). `refuse_in_body` makes a scope answer 200 with its profile's
refusal, `{to}` in the reason echoing the destination as the gateway received it. `report`
calls back with a delivery report in the profile's documented shape (Fonnte's message-status
webhook, Infobip's `results[]` to the request's `notifyUrl`).

Behaviour is scripted per path prefix or globally. The most specific matching scope governs a
request entirely (a prefix scope starts as plain "200 OK" and does not inherit the global one).
Within a scope the answer is decided when the request arrives, in this order: queued one-shot
answers (`fail_next`, `rate_limit`, FIFO), then a standing failure (`fail_always`, `reject`),
then the OK answer. An optional hang delays the answer, not the decision.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections import Counter, deque
from collections.abc import Generator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from giliran_ops.embedded import free_port

HOST = "127.0.0.1"
HEALTH_PATH = "/healthz"


@dataclass
class Received:
    """One raw request as the gateway saw it, and what it answered (None while still hanging)."""

    at: float
    wall: float
    path: str
    method: str
    headers: dict[str, str]
    body: bytes
    form: dict[str, str]
    json: Any
    status: int | None = None
    query: dict[str, str] = field(default_factory=dict)
    ref: str | None = None
    message_id: str | None = None  # the id the gateway answered with (accepted messages)
    profile: str = "generic"

    def param(self, name: str, default: Any = None) -> Any:
        """A request field by name: top-level JSON key, else form field, else query parameter."""
        if isinstance(self.json, dict) and name in self.json:
            return self.json[name]
        if name in self.form:
            return self.form[name]
        return self.query.get(name, default)


@dataclass(frozen=True)
class _Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


PROFILES = ("generic", "fonnte", "zenziva", "infobip")


@dataclass
class _Plan:
    ok_status: int = 200
    ok_body: Any = None
    profile: str = "generic"
    refusal: str | None = None  # a 200 whose body says no, in the profile's words
    queue: deque[_Reply] = field(default_factory=deque)
    always: _Reply | None = None
    hang_seconds: float = 0.0
    hang_remaining: int | None = None  # None: every request while the hang is set

    def decide(self) -> tuple[_Reply | None, float]:
        """The scripted reply (None means OK) and how long to hang first; consumes one-shots."""
        delay = 0.0
        if self.hang_seconds > 0:
            delay = self.hang_seconds
            if self.hang_remaining is not None:
                self.hang_remaining -= 1
                if self.hang_remaining <= 0:
                    self.hang_seconds, self.hang_remaining = 0.0, None
        if self.queue:
            return self.queue.popleft(), delay
        return self.always, delay


class _InLoopServer(uvicorn.Server):
    """uvicorn without signal capture: the test runner keeps its own Ctrl-C handling."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _is_form(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() == "application/x-www-form-urlencoded"


def _matches(received: Received, path_prefix: str | None) -> bool:
    return path_prefix is None or received.path.startswith(path_prefix)


class FakeGateway:
    """Records every POST on any path and answers as scripted; `async with FakeGateway() as gw`.

    `allow_get=True` also handles GET on any path but `/healthz` the same way (fields in the
    query string), for gateways called in the classic `GET ...?userkey=...&pesan=...` style.
    """

    def __init__(self, *, allow_get: bool = False) -> None:
        self.received: list[Received] = []
        self._answered_2xx: list[Received] = []  # in answer order, for idempotency bookkeeping
        self._first_id_by_ref: dict[str, str] = {}
        self._plans: dict[str | None, _Plan] = {None: _Plan()}
        self._release = asyncio.Event()
        self._seq = 0
        self._port: int | None = None
        self._server: _InLoopServer | None = None
        self._task: asyncio.Task[None] | None = None
        self.app = Starlette(
            routes=[
                Route(HEALTH_PATH, self._healthz, methods=["GET"]),
                Route(
                    "/{path:path}", self._handle, methods=["POST", "GET"] if allow_get else ["POST"]
                ),
            ]
        )

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._port is None:
            raise RuntimeError("FakeGateway is not started")
        return f"http://{HOST}:{self._port}"

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FakeGateway is not started")
        return self._port

    async def start(self, *, within: float = 10.0) -> None:
        if self._task is not None:
            raise RuntimeError("FakeGateway already started")
        sock = self._bind()
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            host=HOST,
            port=port,
            lifespan="off",
            access_log=False,
            log_level="warning",
            timeout_graceful_shutdown=5,
        )
        server = _InLoopServer(config)
        task = asyncio.create_task(server.serve(sockets=[sock]), name=f"fake-gateway:{port}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not server.started:
            if task.done():
                sock.close()
                exc = task.exception()
                raise RuntimeError(f"fake gateway on port {port} failed to start") from exc
            if loop.time() > deadline:
                server.should_exit = True
                await task
                raise RuntimeError(f"fake gateway on port {port} did not start in {within}s")
            await asyncio.sleep(0.01)
        self._port, self._server, self._task = port, server, task

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self.release()  # a hanging request would otherwise hold up the graceful shutdown
        self._server.should_exit = True
        try:
            await self._task
        finally:
            self._server, self._task = None, None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @staticmethod
    def _bind(attempts: int = 5) -> socket.socket:
        """A listening-ready socket on a free port; retried in case another test grabbed it."""
        last: OSError | None = None
        for _ in range(attempts):
            # IPPROTO_TCP explicitly: with proto 0 asyncio does not set TCP_NODELAY, and every
            # answer waited ~40 ms for the client's delayed ACK (Nagle), capping the fake at
            # ~23 requests/s per connection.
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
            try:
                sock.bind((HOST, free_port(HOST)))
            except OSError as exc:
                sock.close()
                last = exc
                continue
            return sock
        raise RuntimeError(f"no free port on {HOST}") from last

    # -- scripting -------------------------------------------------------------------------

    def _plan(self, path_prefix: str | None) -> _Plan:
        return self._plans.setdefault(path_prefix, _Plan())

    def respond_ok(
        self, status: int = 200, json_body: Any = None, *, path_prefix: str | None = None
    ) -> None:
        """Answer every request in this scope with `status` (and `json_body` verbatim if given);
        clears that scope's queued failures, standing failure and hang."""
        self._plans[path_prefix] = _Plan(ok_status=status, ok_body=json_body)

    def respond_as(self, profile: str, *, path_prefix: str | None = None) -> None:
        """Answer this scope in `profile`'s documented shape (see the module docstring)."""
        if profile not in PROFILES:
            raise ValueError(f"unknown gateway profile {profile!r}")
        self._plan(path_prefix).profile = profile

    def refuse_in_body(
        self, reason: str = "nomor tujuan {to} tidak valid", *, path_prefix: str | None = None
    ) -> None:
        """Every request in this scope gets HTTP 200 with the profile's refusal in the body;
        `{to}` in the reason is replaced by the destination as sent (gateways echo it)."""
        self._plan(path_prefix).refusal = reason

    def fail_next(
        self, n: int, status: int = 500, *, path_prefix: str | None = None, body: Any = None
    ) -> None:
        """The next `n` requests in this scope get `status` (with `body` if given); then back
        to what was scripted."""
        reply = _Reply(status, body or {"status": False, "error": "gateway error (scripted)"})
        self._plan(path_prefix).queue.extend([reply] * n)

    def fail_always(self, status: int = 500, *, path_prefix: str | None = None) -> None:
        """Every request in this scope gets `status` until `respond_ok`."""
        body = {"status": False, "error": "gateway unavailable (scripted)"}
        self._plan(path_prefix).always = _Reply(status, body)

    def rate_limit(
        self,
        n: int = 1,
        status: int = 429,
        retry_after_seconds: int = 1,
        *,
        path_prefix: str | None = None,
    ) -> None:
        """The next `n` requests in this scope get `status` with a `Retry-After` header."""
        reply = _Reply(
            status,
            {"status": False, "error": "rate limited (scripted)"},
            {"Retry-After": str(retry_after_seconds)},
        )
        self._plan(path_prefix).queue.extend([reply] * n)

    def reject(
        self, status: int = 400, *, path_prefix: str | None = None, body: Any = None
    ) -> None:
        """A permanent failure: every request in this scope gets `status` (with `body` if
        given) until `respond_ok`."""
        body = body or {"status": False, "error": "rejected: invalid request (scripted)"}
        self._plan(path_prefix).always = _Reply(status, body)

    def hang(self, seconds: float, *, n: int | None = None, path_prefix: str | None = None) -> None:
        """Requests in this scope (the next `n`, or all until `release`/`respond_ok`) wait
        `seconds` before being answered; for client timeouts."""
        plan = self._plan(path_prefix)
        plan.hang_seconds, plan.hang_remaining = seconds, n

    def release(self) -> None:
        """End all current hangs now (they then answer as decided) and stop hanging new ones."""
        for plan in self._plans.values():
            plan.hang_seconds, plan.hang_remaining = 0.0, None
        self._release.set()
        self._release = asyncio.Event()

    def clear(self) -> None:
        """Forget every recorded request (behaviour is kept)."""
        self.received.clear()
        self._answered_2xx.clear()
        self._first_id_by_ref.clear()

    def reset(self) -> None:
        """Back to a fresh gateway: release hangs, plain 200 OK everywhere, no records."""
        self.release()
        self._plans = {None: _Plan()}
        self.clear()

    # -- inspection ------------------------------------------------------------------------

    def count(self, path_prefix: str | None = None) -> int:
        """Raw requests received (any answer, including ones still hanging)."""
        return sum(1 for r in self.received if _matches(r, path_prefix))

    def messages(self, path_prefix: str | None = None) -> list[Received]:
        """Accepted messages: every 2xx request without a reference, and the first 2xx request
        for each distinct reference; in answer order."""
        seen: set[str] = set()
        out: list[Received] = []
        for r in self._answered_2xx:
            if not _matches(r, path_prefix):
                continue
            if r.ref is not None:
                if r.ref in seen:
                    continue
                seen.add(r.ref)
            out.append(r)
        return out

    def accepted_refs(self, path_prefix: str | None = None) -> set[str]:
        """Distinct client references answered 2xx."""
        return {r.ref for r in self._answered_2xx if r.ref is not None and _matches(r, path_prefix)}

    def duplicates(self, path_prefix: str | None = None) -> int:
        """2xx requests whose reference had already been answered 2xx."""
        refs = [r.ref for r in self._answered_2xx if r.ref is not None and _matches(r, path_prefix)]
        return len(refs) - len(set(refs))

    async def wait_for(
        self, n: int, within: float = 10.0, path_prefix: str | None = None
    ) -> list[Received]:
        """Poll until at least `n` accepted messages (see `messages`); return them."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            accepted = self.messages(path_prefix)
            if len(accepted) >= n:
                return accepted
            if loop.time() >= deadline:
                raise AssertionError(self._describe_shortfall(n, within, path_prefix))
            await asyncio.sleep(0.02)

    def _describe_shortfall(self, n: int, within: float, path_prefix: str | None) -> str:
        raw = [r for r in self.received if _matches(r, path_prefix)]
        statuses = Counter("hanging" if r.status is None else r.status for r in raw)
        where = f" under {path_prefix!r}" if path_prefix is not None else ""
        recent = ", ".join(f"{r.method} {r.path} -> {r.status}" for r in raw[-5:]) or "none"
        return (
            f"expected at least {n} accepted message(s){where} at {self.url} within {within}s; "
            f"got {len(self.messages(path_prefix))} accepted of {len(raw)} received "
            f"(answers: {dict(statuses)}; duplicates: {self.duplicates(path_prefix)}); "
            f"last requests: {recent}"
        )

    def max_in_window(self, seconds: float = 1.0, path_prefix: str | None = None) -> int:
        """Most requests received within any half-open window [t, t + seconds)."""
        times = sorted(r.at for r in self.received if _matches(r, path_prefix))
        best, start = 0, 0
        for end, t in enumerate(times):
            while t - times[start] >= seconds:
                start += 1
            best = max(best, end - start + 1)
        return best

    # -- ASGI endpoints --------------------------------------------------------------------

    async def _healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    def _plan_for(self, path: str) -> _Plan:
        prefixes = [p for p in self._plans if p is not None and path.startswith(p)]
        return self._plans[max(prefixes, key=len)] if prefixes else self._plans[None]

    async def _handle(self, request: Request) -> Response:
        at, wall = time.monotonic(), time.time()
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        content_type = headers.get("content-type", "")
        form: dict[str, str] = {}
        parsed: Any = None
        if _is_form(content_type):
            form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        elif _is_json(content_type):
            with contextlib.suppress(ValueError):
                parsed = json.loads(body)
        ref = headers.get("idempotency-key")
        if ref is None and isinstance(parsed, dict) and parsed.get("ref") is not None:
            ref = str(parsed["ref"])
        if ref is None and form.get("ref") is not None:
            ref = form["ref"]
        query = dict(request.query_params)
        if ref is None and query.get("ref") is not None:
            ref = query["ref"]
        record = Received(
            at=at,
            wall=wall,
            path=request.url.path,
            method=request.method,
            headers=headers,
            body=body,
            form=form,
            json=parsed,
            query=query,
            ref=ref,
        )
        self.received.append(record)

        plan = self._plan_for(record.path)
        scripted, delay = plan.decide()
        ok_status, ok_body = plan.ok_status, plan.ok_body
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._release.wait(), delay)

        if scripted is not None:
            record.status = scripted.status
            return JSONResponse(scripted.body, scripted.status, headers=scripted.headers)
        record.status = ok_status
        if plan.refusal is not None:
            return JSONResponse(_refusal(plan.profile, plan.refusal, record), ok_status)
        accepted = 200 <= ok_status < 300
        if accepted:
            self._answered_2xx.append(record)
        if ok_body is not None:
            return JSONResponse(ok_body, ok_status)
        first_id = self._first_id_by_ref.get(ref) if ref is not None else None
        if first_id is None:
            self._seq += 1
            message_id = f"fake-{self._seq}"
            if ref is not None and accepted:
                self._first_id_by_ref[ref] = message_id
        else:
            message_id = first_id
        if plan.profile == "infobip":  # Infobip keeps the client's own messageId when given
            requested = _path(record.json, "messages.0.destinations.0.messageId")
            message_id = str(requested or message_id)
        record.message_id = message_id
        record.profile = plan.profile
        payload = _acceptance(plan.profile, message_id, record)
        if plan.profile == "generic":
            payload.update({"ref": ref, "duplicate": first_id is not None})
        return JSONResponse(payload, ok_status)

    # -- delivery reports ------------------------------------------------------------------

    async def report(
        self,
        message: Received,
        outcome: str = "delivered",
        *,
        url: str | None = None,
        reason: str = "",
    ) -> httpx.Response:
        """Call back with a delivery report on an accepted `message`, as its gateway does:
        Fonnte posts its message-status webhook (to the device's configured `url`), Infobip
        posts `results[]` to the request's `notifyUrl` (or `url`). `outcome`: delivered,
        undelivered, or an intermediate state (sent / pending)."""
        body = receipt_body(message.profile, str(message.message_id), outcome, message, reason)
        target = url or _notify_url(message)
        if target is None:
            raise ValueError("no receipt URL: pass url= (Fonnte's is per device)")
        async with httpx.AsyncClient(timeout=10) as client:
            return await client.post(target, json=body)


def _destination(record: Received) -> str:
    for name in ("target", "to", "nohp", "phone"):
        value = record.param(name)
        if value:
            return str(value)
    found = _path(record.json, "messages.0.destinations.0.to")
    return str(found or "")


def _path(doc: Any, dotted: str) -> Any:
    here = doc
    for step in dotted.split("."):
        if isinstance(here, list) and step.isdigit() and int(step) < len(here):
            here = here[int(step)]
        elif isinstance(here, dict) and step in here:
            here = here[step]
        else:
            return None
    return here


def _notify_url(record: Received) -> str | None:
    found = _path(record.json, "messages.0.notifyUrl")
    return str(found) if found else None


def _acceptance(profile: str, message_id: str, record: Received) -> dict[str, Any]:
    to = _destination(record)
    if profile == "fonnte":
        return {
            "detail": "success! message in queue",
            "id": [message_id],
            "process": "pending",
            "status": True,
            "target": [to],
        }
    if profile == "zenziva":
        return {"messageId": message_id, "to": to, "status": "1", "text": "Success", "cost": 220}
    if profile == "infobip":
        return {
            "bulkId": f"bulk-{message_id}",
            "messages": [
                {
                    "messageId": message_id,
                    "status": {
                        "groupId": 1,
                        "groupName": "PENDING",
                        "id": 26,
                        "name": "PENDING_ACCEPTED",
                        "description": "Message sent to next instance",
                    },
                    "to": to,
                }
            ],
        }
    return {"status": True, "id": message_id}


def _refusal(profile: str, reason: str, record: Received) -> dict[str, Any]:
    to = _destination(record)
    words = reason.replace("{to}", to)
    if profile == "fonnte":
        return {"reason": words, "status": False}
    if profile == "zenziva":
        return {"messageId": 0, "to": to, "status": "0", "text": words}
    if profile == "infobip":
        return {
            "bulkId": "bulk-refused",
            "messages": [
                {
                    "messageId": "refused",
                    "status": {
                        "groupId": 5,
                        "groupName": "REJECTED",
                        "id": 51,
                        "name": "REJECTED_DESTINATION",
                        "description": words,
                    },
                    "to": to,
                }
            ],
        }
    return {"status": False, "error": words}


def receipt_body(
    profile: str, message_id: str, outcome: str, record: Received | None = None, reason: str = ""
) -> Any:
    """A delivery report in `profile`'s documented shape."""
    to = _destination(record) if record is not None else ""
    if profile == "fonnte":
        # Fonnte's message-status webhook: device, id, stateid, status, state.
        status = {"delivered": "sent", "undelivered": "invalid"}.get(outcome, outcome)
        state = {"delivered": "delivered"}.get(outcome, "")
        return {
            "device": "6281100000000",
            "id": message_id,
            "stateid": f"state-{message_id}",
            "status": status,
            "state": state,
        }
    if profile == "infobip":
        groups = {
            "delivered": (3, "DELIVERED", 5, "DELIVERED_TO_HANDSET"),
            "undelivered": (2, "UNDELIVERABLE", 9, "UNDELIVERABLE_NOT_DELIVERED"),
            "operator": (3, "DELIVERED", 2, "DELIVERED_TO_OPERATOR"),
        }
        group_id, group, status_id, name = groups.get(
            outcome, (1, "PENDING", 3, "PENDING_WAITING_DELIVERY")
        )
        return {
            "results": [
                {
                    "bulkId": f"bulk-{message_id}",
                    "messageId": message_id,
                    "to": to,
                    "sentAt": "2026-12-06T02:00:00.000+0000",
                    "doneAt": "2026-12-06T02:00:05.000+0000",
                    "smsCount": 1,
                    "status": {
                        "groupId": group_id,
                        "groupName": group,
                        "id": status_id,
                        "name": name,
                        "description": reason or name,
                    },
                    "error": {
                        "groupId": 0,
                        "groupName": "OK",
                        "id": 0,
                        "name": reason or "NO_ERROR",
                    },
                }
            ]
        }
    return {"id": message_id, "status": outcome, "reason": reason}


@contextlib.asynccontextmanager
async def serve_app(app: Any, sock: socket.socket | None = None) -> Any:
    """Serve an ASGI app (a service whose lifespan already runs) on 127.0.0.1 over real HTTP, so
    a fake gateway can call it back; `sock` from `listening_socket()` fixes the port first."""
    sock = sock or FakeGateway._bind()
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        host=HOST,
        port=port,
        lifespan="off",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=2,
    )
    server = _InLoopServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name=f"served-app:{port}")
    while not server.started:
        if task.done():
            raise RuntimeError(f"app on port {port} failed to start") from task.exception()
        await asyncio.sleep(0.01)
    try:
        yield f"http://{HOST}:{port}"
    finally:
        server.should_exit = True
        await task


def listening_socket() -> socket.socket:
    """A bound socket on a free loopback port (its port can go into settings before serving)."""
    return FakeGateway._bind()
