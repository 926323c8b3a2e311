"""Who is asking, on the web: session cookies, API tokens, CSRF, role checks, login and logout."""

from __future__ import annotations

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
    SESSION_LIFETIME,
    AuthStore,
    Principal,
    Role,
)
from giliran.contracts import utcnow
from giliran.errors import DomainError

log = logging.getLogger("giliran.auth")

SESSION_COOKIE = "giliran_session"
DEVICE_COOKIE = "giliran_device"  # a display device's token, for reading only
PRE_COOKIE = "giliran_pre"  # the login form's own CSRF anchor, before there is a session
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

    def __init__(self, store: AuthStore, secret: str, *, legacy_admin_token: str | None = None):
        self.store = store
        self._secret = secret.encode()
        # Cookie signing: a forged or edited cookie is refused before any database lookup.
        self._signer = TimestampSigner(secret, salt="giliran-session")
        self._legacy_admin_token = legacy_admin_token
        self._legacy_warned = False

    # --- tokens in cookies and forms ---------------------------------------------------

    def _mac(self, purpose: str, value: str) -> str:
        return hmac.new(self._secret, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()

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
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            token = header[7:].strip()
            found = await self.store.by_token(token) if token else None
            if found is None and self._legacy_admin_token and token:
                found = self._legacy(token)
        else:
            session_id = self._session_id(request)
            if session_id:
                found = await self.store.by_session(session_id)
            if found is not None and request.method not in SAFE_METHODS:
                # An ambient credential (a cookie the browser adds by itself) must come with
                # proof that the page sending it is ours. Bearer tokens are never ambient.
                await self._check_csrf(request, found)
            if found is not None and found.session_id:
                request.state.csrf = self.csrf_for_session(found.session_id)
            device = request.cookies.get(DEVICE_COOKIE)
            if found is None and device and request.method in SAFE_METHODS:
                # A board's browser cannot send a header: its token rides in a cookie, which is
                # honoured for reading only, so it can never carry a forged action.
                found = await self.store.by_token(device)
        request.state.principal = found
        return found

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
        given = request.headers.get(CSRF_HEADER, "")
        if not given and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")
        ):
            form = await request.form()  # Starlette caches it for the endpoint's Form() fields
            given = str(form.get(CSRF_FIELD, ""))
        expected = self.csrf_for_session(who.session_id)
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
        return who


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

    def form(
        request: Request, lang: str, next_url: str, error: str | None, status: int
    ) -> Response:
        pre = request.cookies.get(PRE_COOKIE) or secrets.token_urlsafe(16)
        response = PAGES.TemplateResponse(
            request,
            "login.html",
            {
                "lang": lang,
                "next": next_url,
                "csrf": auth._mac("pre", pre),
                "error": error,
                "toggle": f"/login?lang={'en' if lang == 'id' else 'id'}&next={quote(next_url)}",
            },
            status_code=status,
        )
        response.set_cookie(
            PRE_COOKIE, pre, httponly=True, samesite="strict", secure=_https(request)
        )
        return response

    @api.get("/login", response_class=HTMLResponse)
    async def login_page(request: Request, lang: str = "id", next: str = "/") -> Response:
        return form(request, "en" if lang == "en" else "id", _safe_next(next), None, 200)

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
        pre = request.cookies.get(PRE_COOKIE, "")
        if not pre or not hmac.compare_digest(csrf.encode(), auth._mac("pre", pre).encode()):
            raise CsrfRejected()
        now = utcnow()
        address = request.client.host if request.client else "-"
        failures = await auth.store.failed_sign_ins(username, address, now)
        if failures >= LOGIN_FAILURES_ALLOWED:
            log.warning("sign-in refused: too many failures for a name (%d chars)", len(username))
            return form(request, lang, _safe_next(next), "locked", 429)
        user = await auth.store.authenticate(username, password)
        if user is None:
            await auth.store.note_failed_sign_in(username, address, now)
            log.info("login refused for a user name (%d chars)", len(username))
            return form(request, lang, _safe_next(next), "wrong", 401)
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
        return response

    @api.get("/device")
    async def device(request: Request, token: str = "", next: str = "/") -> Response:
        """Set up a display device once: `/device?token=gl_...&next=/board?site=...` keeps the
        token in an HttpOnly cookie and drops it from the address bar."""
        who = await auth.store.by_token(token) if token else None
        if who is None:
            raise Unauthenticated()
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
