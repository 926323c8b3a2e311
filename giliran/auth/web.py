"""Who is asking, on the web: session cookies, API tokens, CSRF, role checks, login and logout."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from itsdangerous import BadSignature, TimestampSigner

from giliran.auth.accounts import (
    ALL_SITES,
    LOGIN_FAILURES_ALLOWED,
    LOGIN_FAILURES_PER_ADDRESS,
    LOGIN_FORM_LIFETIME,
    SESSION_LIFETIME,
    AuthStore,
    Principal,
    Role,
    token_digest,
)
from giliran.contracts import utcnow
from giliran.errors import DomainError
from giliran.hardening import client_key

log = logging.getLogger("giliran.auth")

SESSION_COOKIE = "giliran_session"
DEVICE_COOKIE = "giliran_device"  # a paired device's token (docs/devices.md)
PRE_COOKIE = "giliran_pre"  # the login form's own CSRF anchor, before there is a session
# Set at a successful sign-in: this browser has signed in as this name before, so the name is not
# held back when its address (an office behind one NAT, a fair's wifi) is over its failure budget.
KNOWN_COOKIE = "giliran_known"
KNOWN_LIFETIME = 90 * 24 * 3600
# A refused-because-busy sign-in may try again this many seconds later.
BUSY_RETRY_SECONDS = 2
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PAGES = Jinja2Templates(directory=Path(__file__).parent / "pages")


class Unauthenticated(DomainError):
    code = "unauthenticated"
    http_status = 401

    def __init__(self) -> None:
        super().__init__(
            "Perlu masuk terlebih dahulu: kirim token API (Authorization: Bearer) atau masuk "
            "lewat /login.",
            "Sign-in required: send an API token (Authorization: Bearer) or sign in at /login.",
        )


class Forbidden(DomainError):
    code = "forbidden"
    http_status = 403

    def __init__(self, why_id: str, why_en: str) -> None:
        super().__init__(f"Akses ditolak: {why_id}", f"Access denied: {why_en}")


class CsrfRejected(DomainError):
    code = "csrf_rejected"
    http_status = 403

    def __init__(self) -> None:
        super().__init__(
            "Akses ditolak: token CSRF tidak ada atau tidak cocok. Muat ulang halaman lalu coba "
            "lagi.",
            "Access denied: the CSRF token is missing or wrong. Reload the page and try again.",
        )


class LoginRequired(Exception):
    """A page asked for by someone not signed in: the edge sends them to /login."""

    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next_url = next_url


class Auth:
    """The checks every service applies, over the shared accounts store."""

    def __init__(
        self,
        store: AuthStore,
        secret: str,
        *,
        legacy_admin_token: str | None = None,
        password_checks: int = 2,
    ):
        self.store = store
        self._secret = secret.encode()
        # Cookie signing: a forged or edited cookie is refused before any database lookup.
        self._signer = TimestampSigner(secret, salt="giliran-session")
        self._form_signer = TimestampSigner(secret, salt="giliran-login-form")
        self._known_signer = TimestampSigner(secret, salt="giliran-known-device")
        # Each argon2id check holds 64 MiB: at most this many run at once in this process, and a
        # sign-in beyond them is refused at once rather than queued (ADR 0112).
        self.password_checks = asyncio.Semaphore(password_checks)
        self._legacy_admin_token = legacy_admin_token
        self._legacy_warned = False

    # --- tokens in cookies and forms ---------------------------------------------------

    def _mac(self, purpose: str, value: str) -> str:
        return hmac.new(self._secret, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()

    def login_form_nonce(self, request: Request) -> str | None:
        """The signed nonce of the login form this browser holds, if genuine and not expired."""
        cookie = request.cookies.get(PRE_COOKIE)
        if not cookie:
            return None
        try:
            max_age = int(LOGIN_FORM_LIFETIME.total_seconds())
            return self._form_signer.unsign(cookie, max_age=max_age).decode()
        except BadSignature:
            return None

    def new_login_form(self) -> tuple[str, str]:
        """A fresh (cookie, nonce) pair for the login form."""
        nonce = secrets.token_urlsafe(16)
        return self._form_signer.sign(nonce).decode(), nonce

    def known_device(self, request: Request, name: str) -> bool:
        """This browser signed in as `name` before (within KNOWN_LIFETIME)."""
        cookie = request.cookies.get(KNOWN_COOKIE)
        if not cookie:
            return False
        try:
            known = self._known_signer.unsign(cookie, max_age=KNOWN_LIFETIME).decode()
        except BadSignature:
            return False
        return hmac.compare_digest(known.encode(), _name_digest(name).encode())

    def known_cookie(self, name: str) -> str:
        return self._known_signer.sign(_name_digest(name)).decode()

    def csrf_for_session(self, session_id: str) -> str:
        """Synchronizer token bound to the session: no other session's token is accepted."""
        return self._mac("csrf", session_id)

    def session_cookie(self, session_id: str) -> str:
        return self._signer.sign(session_id).decode()

    def _session_id(self, request: Request) -> str | None:
        cookie = request.cookies.get(SESSION_COOKIE)
        if not cookie:
            return None
        try:
            max_age = int(SESSION_LIFETIME.total_seconds())
            return self._signer.unsign(cookie, max_age=max_age).decode()
        except BadSignature:
            return None

    # --- who is asking ------------------------------------------------------------------

    async def principal(self, request: Request) -> Principal | None:
        cached = getattr(request.state, "principal", None)
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        found: Principal | None = None
        # An action (any unsafe method) asks the store who is acting, never the memory: a
        # revocation must stop the next action even if its notice has not arrived yet (ADR 0180).
        fresh = request.method not in SAFE_METHODS
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            token = header[7:].strip()
            found = await self.store.by_token(token, fresh=fresh) if token else None
            if found is None and self._legacy_admin_token and token:
                found = self._legacy(token)
        else:
            session_id = self._session_id(request)
            if session_id:
                found = await self.store.by_session(session_id, fresh=fresh)
            if found is not None and request.method not in SAFE_METHODS:
                # An ambient credential (a cookie the browser adds by itself) must come with
                # proof that the page sending it is ours. Bearer tokens are never ambient.
                await self._check_csrf(request, found)
            if found is not None and found.session_id:
                request.state.csrf = self.csrf_for_session(found.session_id)
            device = request.cookies.get(DEVICE_COOKIE)
            if found is None and device:
                found = await self._device(request, device)
        request.state.principal = found
        return found

    async def _device(self, request: Request, token: str) -> Principal | None:
        """A device's browser cannot send a header: its token rides in a cookie. Only a device
        credential counts there (never a person's token put in a cookie before that was
        refused). A board reads only; a counter tablet or kiosk acts too, but, the cookie being
        ambient, each action must carry the CSRF token its pages embed."""
        found = await self.store.by_token(token, fresh=request.method not in SAFE_METHODS)
        if found is None or not found.is_device:
            return None
        acts = found.role in (Role.OFFICER, Role.KIOSK)
        if acts:
            request.state.csrf = self.csrf_for_device(token)
        if request.method in SAFE_METHODS:
            return found
        if not acts:
            return None
        await self._check_token(request, self.csrf_for_device(token))
        return found

    def csrf_for_device(self, token: str) -> str:
        return self._mac("csrf-device", token_digest(token))

    def _legacy(self, token: str) -> Principal | None:
        assert self._legacy_admin_token is not None
        if hmac.compare_digest(token.encode(), self._legacy_admin_token.encode()):
            if not self._legacy_warned:
                self._legacy_warned = True
                log.warning("GILIRAN_ADMIN_TOKEN used: replace it (giliran accounts token ...)")
            return Principal("admin-token", Role.ADMIN, ALL_SITES, "token")
        return None

    async def _check_csrf(self, request: Request, who: Principal) -> None:
        assert who.session_id is not None
        await self._check_token(request, self.csrf_for_session(who.session_id))

    async def _check_token(self, request: Request, expected: str) -> None:
        given = request.headers.get(CSRF_HEADER, "")
        if not given and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")
        ):
            form = await request.form()  # Starlette caches it for the endpoint's Form() fields
            given = str(form.get(CSRF_FIELD, ""))
        if not given or not hmac.compare_digest(given.encode(), expected.encode()):
            raise CsrfRejected()

    async def check(
        self, request: Request, allowed: frozenset[Role], site_from: str | None, page: bool
    ) -> Principal:
        """The caller holds one of `allowed` at the site named by the path or query parameter
        `site_from` (`Principal.at`: admins too are held to their site). Pages send strangers
        to /login."""
        who = await self.principal(request)
        if who is None:
            if page:
                raise LoginRequired(str(request.url.path) + _query(request))
            raise Unauthenticated()
        if who.role not in allowed:
            names = ", ".join(sorted(r.value for r in allowed))
            raise Forbidden(
                f"peran '{who.role.value}' tidak boleh melakukan ini (perlu: {names}).",
                f"role '{who.role.value}' may not do this (needs: {names}).",
            )
        site = (
            request.path_params.get(site_from) or request.query_params.get(site_from)
            if site_from
            else None
        )
        if site and not who.at(str(site)):
            raise wrong_site(who, str(site))
        if who.counter is not None:
            _at_own_counter(request, who)
        return who


def _at_own_counter(request: Request, who: Principal) -> None:
    """A counter tablet serves its own counter: another counter named in the path or query is
    refused, and so is any change that names no counter (a ticket by id, a re-check-in)."""
    named = request.path_params.get("counter") or request.query_params.get("counter")
    if named is not None and str(named) != who.counter:
        raise Forbidden(
            f"perangkat ini untuk loket '{who.counter}', bukan '{named}'.",
            f"this device is for counter '{who.counter}', not '{named}'.",
        )
    if named is None and request.method not in SAFE_METHODS:
        raise Forbidden(
            f"perangkat loket hanya bertindak lewat loketnya sendiri ('{who.counter}').",
            f"a counter device acts only through its own counter ('{who.counter}').",
        )


def wrong_site(who: Principal, site: str) -> Forbidden:
    return Forbidden(
        f"akun ini untuk lokasi '{who.site}', bukan '{site}'.",
        f"this account is for site '{who.site}', not '{site}'.",
    )


class Requirement:
    """Who may call a route: a FastAPI dependency over the app's `Auth` that also says what it
    demands, so tests/integration/test_access.py can find every protected route."""

    def __init__(self, roles: frozenset[Role], site_from: str | None, page: bool) -> None:
        self.roles = roles
        self.site_from = site_from
        self.page = page

    async def __call__(self, request: Request) -> Principal:
        auth: Auth = request.app.state.auth
        return await auth.check(request, self.roles, self.site_from, self.page)


def requires(*roles: Role, site_from: str | None = "site", page: bool = False) -> Requirement:
    """A FastAPI dependency over the app's `Auth` (set by `create_http_app`), declared at module
    level by the services: `Officer = Annotated[Principal, Depends(requires(Role.OFFICER))]`."""
    return Requirement(frozenset(roles), site_from, page)


def _name_digest(name: str) -> str:
    # The known-device cookie names the user only as a digest.
    return hashlib.sha256(name.strip().lower().encode()).hexdigest()[:32]


def _query(request: Request) -> str:
    return f"?{request.url.query}" if request.url.query else ""


def _safe_next(target: str) -> str:
    # Only a path on this service: "//evil.example" or "https://..." would be an open redirect.
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def login_router(auth: Auth) -> APIRouter:
    """GET/POST /login and POST /logout, served by every service over the same accounts."""
    api = APIRouter(tags=["accounts"], include_in_schema=False)

    async def form(
        request: Request,
        lang: str,
        next_url: str,
        error: str | None,
        status: int,
        *,
        fresh: bool = False,
    ) -> Response:
        # The form this browser holds stays valid until it is used (a second tab, a reload);
        # after a post (`fresh`) or once used, a new one.
        nonce = None if fresh else auth.login_form_nonce(request)
        if nonce is None or await auth.store.login_form_used(nonce):
            cookie, nonce = auth.new_login_form()
        else:
            cookie = request.cookies[PRE_COOKIE]
        response = PAGES.TemplateResponse(
            request,
            "login.html",
            {
                "lang": lang,
                "next": next_url,
                "csrf": auth._mac("pre", nonce),
                "error": error,
                "toggle": f"/login?lang={'en' if lang == 'id' else 'id'}&next={quote(next_url)}",
            },
            status_code=status,
        )
        response.set_cookie(
            PRE_COOKIE,
            cookie,
            max_age=int(LOGIN_FORM_LIFETIME.total_seconds()),
            httponly=True,
            samesite="strict",
            secure=_https(request),
        )
        return response

    @api.get("/login", response_class=HTMLResponse)
    async def login_page(request: Request, lang: str = "id", next: str = "/") -> Response:
        return await form(request, "en" if lang == "en" else "id", _safe_next(next), None, 200)

    @api.post("/login")
    async def login(
        request: Request,
        username: Annotated[str, Form(max_length=100)],
        password: Annotated[str, Form(max_length=200)],
        csrf: Annotated[str, Form(max_length=200)] = "",
        next: Annotated[str, Form(max_length=500)] = "/",
        lang: Annotated[str, Form(max_length=2)] = "id",
    ) -> Response:
        lang = "en" if lang == "en" else "id"
        now = utcnow()
        # The form's token: signed, unexpired, matching, and never used before (single-use).
        nonce = auth.login_form_nonce(request)
        if (
            nonce is None
            or not hmac.compare_digest(csrf.encode(), auth._mac("pre", nonce).encode())
            or not await auth.store.use_login_form(nonce, now)
        ):
            raise CsrfRejected()
        target = _safe_next(next)
        address = client_key(request) or "-"
        if await auth.store.failed_sign_ins(username, address, now) >= LOGIN_FAILURES_ALLOWED:
            log.warning("sign-in refused: too many failures for a name (%d chars)", len(username))
            return await form(request, lang, target, "locked", 429, fresh=True)
        if not auth.known_device(request, username) and (
            await auth.store.failed_sign_ins_from(address, now) >= LOGIN_FAILURES_PER_ADDRESS
        ):
            log.warning("sign-in refused: too many failures from one address")
            return await form(request, lang, target, "address", 429, fresh=True)
        if auth.password_checks.locked():
            # Every slot is hashing: answer now (no queue that could grow without bound).
            log.warning("sign-in refused: every password check slot is in use")
            busy = await form(request, lang, target, "busy", 503, fresh=True)
            busy.headers["Retry-After"] = str(BUSY_RETRY_SECONDS)
            return busy
        async with auth.password_checks:
            user = await auth.store.authenticate(username, password)
        if user is None:
            await auth.store.note_failed_sign_in(username, address, now)
            log.info("login refused for a user name (%d chars)", len(username))
            return await form(request, lang, target, "wrong", 401, fresh=True)
        # Always (one write by key): an expired window's record goes too, not only a live one.
        await auth.store.clear_failed_sign_ins(username, address)
        old = auth._session_id(request)
        if old:
            await auth.store.close_session(old)
        session_id = await auth.store.open_session(user)
        response = RedirectResponse(_safe_next(next), status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            auth.session_cookie(session_id),
            max_age=int(SESSION_LIFETIME.total_seconds()),
            httponly=True,
            samesite="lax",  # lax: a link from a message still opens the console signed in
            secure=_https(request),
        )
        response.delete_cookie(PRE_COOKIE)
        response.set_cookie(
            KNOWN_COOKIE,
            auth.known_cookie(username),
            max_age=KNOWN_LIFETIME,
            httponly=True,
            samesite="strict",
            secure=_https(request),
        )
        return response

    @api.get("/device")
    async def device(request: Request, token: str = "", next: str = "/") -> Response:
        """Set up a display device once: `/device?token=gl_...&next=/board?site=...` keeps the
        token in an HttpOnly cookie and drops it from the address bar. Only a device's token
        (display, kiosk): a person's token in a year-long cookie would turn any browser it
        touched into that person, and an admin's into an admin (issue 14, finding 9)."""
        who = await auth.store.by_token(token) if token else None
        if who is None:
            raise Unauthenticated()
        if not who.is_device:
            raise Forbidden(
                f"token peran '{who.role.value}' bukan token perangkat; hanya token tampilan "
                "atau kios (atau pemasangan perangkat dari halaman /devices) yang disimpan di "
                "perangkat.",
                f"a '{who.role.value}' token is not a device token; only display or kiosk "
                "tokens (or a device paired from the /devices page) are kept on a device.",
            )
        response = RedirectResponse(_safe_next(next), status_code=303)
        response.set_cookie(
            DEVICE_COOKIE,
            token,
            max_age=365 * 24 * 3600,
            httponly=True,
            samesite="strict",
            secure=_https(request),
        )
        return response

    @api.post("/logout")
    async def logout(request: Request) -> Response:
        who = await auth.principal(request)  # checks CSRF for a session
        if who is not None and who.session_id:
            await auth.store.close_session(who.session_id)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        return response

    return api


def _https(request: Request) -> bool:
    return request.url.scheme == "https"


def login_redirect(_: Request, exc: Any) -> Response:
    return RedirectResponse(f"/login?next={quote(exc.next_url)}", status_code=303)
