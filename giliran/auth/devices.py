"""Pairing the devices in the room (counter tablets, the board TV, the kiosk) by a one-time QR code,
and revoking them: the supervisor's devices page and the pairing link a device opens once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

import segno
from fastapi import APIRouter, Depends, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from giliran.auth.accounts import DeviceKind, Principal, Role
from giliran.auth.audit import AuditLog
from giliran.auth.web import DEVICE_COOKIE, PAGES, Auth, _https, requires, wrong_site
from giliran.contracts.subjects import SITE_PATTERN
from giliran.errors import DomainError
from giliran.settings import ServiceName, Settings

# A device keeps its cookie for a year; revoking it on the devices page ends it at once.
DEVICE_COOKIE_SECONDS = 365 * 24 * 3600
DEVICE_KINDS = [k.value for k in DeviceKind]

# Supervisors look after their site's devices; admins after any site's (a site-scoped admin only
# their own: the site comes from the form, so it is checked against the account below).
Keeper = Annotated[Principal, Depends(requires(Role.SUPERVISOR, Role.ADMIN, site_from=None))]
KeeperPage = Annotated[
    Principal, Depends(requires(Role.SUPERVISOR, Role.ADMIN, site_from=None, page=True))
]
SiteQuery = Annotated[str, Query(pattern=SITE_PATTERN, max_length=63)]
Counters = Callable[[str], list[tuple[str, str]]]


class PairingUnknown(DomainError):
    code = "pairing_unknown"
    http_status = 410

    def __init__(self) -> None:
        super().__init__(
            "Kode pemasangan tidak berlaku (sudah dipakai, kedaluwarsa, atau dicabut). Minta "
            "penyelia membuat kode QR baru di halaman /devices.",
            "This pairing code is not valid (already used, expired or revoked). Ask a "
            "supervisor for a new QR code from the /devices page.",
        )


class DeviceNotFound(DomainError):
    code = "device_not_found"
    http_status = 404

    def __init__(self) -> None:
        super().__init__("Perangkat tidak ditemukan.", "No such device.")


class PairingInvalid(DomainError):
    code = "pairing_invalid"
    http_status = 422

    def __init__(self, why_id: str, why_en: str) -> None:
        super().__init__(why_id, why_en)


def page_url(settings: Settings, service: ServiceName, path: str) -> str:
    """Where a browser finds a service's page: on the public address when a proxy serves every
    service on one host (the office mode, compose), else at the service's own port."""
    public = settings.public_url.rstrip("/")
    if public and urlsplit(public).netloc != urlsplit(settings.url_of("intake")).netloc:
        return public + path
    return settings.url_of(service) + path


def pairing_url(settings: Settings, code: str) -> str:
    """The one-time link a pairing QR code carries, at the address the devices reach."""
    base = settings.public_url.rstrip("/") or settings.url_of("intake")
    return f"{base}/device/pair/{code}"


def device_home(settings: Settings, who: Principal) -> str:
    """The page a paired device opens, and opens again after every restart."""
    site = quote(who.site, safe="")
    if who.device is DeviceKind.COUNTER:
        counter = quote(who.counter or "", safe="")
        return page_url(settings, "queue", f"/console?site={site}&counter={counter}")
    if who.device is DeviceKind.BOARD:
        return page_url(settings, "queue", f"/board?site={site}")
    return page_url(settings, "intake", f"/kiosk/{site}")


def qr_png(url: str) -> str:
    """A QR code as a PNG data URI (segno, no network; the pages' CSP allows data: images)."""
    return str(segno.make(url, error="m").png_data_uri(scale=6, border=4))


def devices_router(
    auth: Auth, audit: AuditLog, settings: Settings, counters: Counters
) -> APIRouter:
    """`counters(site)`: the site's counters as (id, name) pairs; KeyError for no such site."""
    api = APIRouter(tags=["devices"], include_in_schema=False)
    store = auth.store

    def site_of(who: Principal, site: str) -> list[tuple[str, str]]:
        if not who.at(site):
            raise wrong_site(who, site)
        try:
            return counters(site)
        except KeyError as exc:
            raise PairingInvalid("Lokasi tidak dikenal.", "Unknown site.") from exc

    async def render(
        request: Request,
        who: Principal,
        site: str,
        lang: str,
        pairing: dict[str, Any] | None = None,
        status: int = 200,
    ) -> Response:
        return PAGES.TemplateResponse(
            request,
            "devices.html",
            {
                "lang": "en" if lang == "en" else "id",
                "who": who,
                "site": site,
                "counters": site_of(who, site),
                "kinds": DEVICE_KINDS,
                "devices": await store.devices(site),
                "pairing": pairing,
                "csrf": getattr(request.state, "csrf", ""),
            },
            status_code=status,
        )

    @api.get("/devices", response_class=HTMLResponse)
    async def devices_page(
        request: Request, who: KeeperPage, site: SiteQuery | None = None, lang: str = "id"
    ) -> Response:
        chosen = site or (who.site if who.site != "*" else settings.demo_site)
        return await render(request, who, chosen, lang)

    @api.post("/devices", response_class=HTMLResponse, status_code=201)
    async def pair_device(
        request: Request,
        who: Keeper,
        site: Annotated[str, Form(pattern=SITE_PATTERN, max_length=63)],
        kind: Annotated[DeviceKind, Form()],
        counter: Annotated[str, Form(max_length=32)] = "",
        label: Annotated[str, Form(max_length=60)] = "",
        lang: Annotated[str, Form(max_length=2)] = "id",
    ) -> Response:
        known = dict(site_of(who, site))
        if kind is DeviceKind.COUNTER and counter not in known:
            raise PairingInvalid(
                f"Loket '{counter}' tidak ada di {site}.", f"{site} has no counter '{counter}'."
            )
        bound = counter if kind is DeviceKind.COUNTER else None
        name = label.strip() or (f"{kind.value}-{bound}" if bound else kind.value)
        token_id, code = await store.start_pairing(kind, site, name, counter=bound, by=who.name)
        await audit.record(
            who, "device_pair", site, f"device:{token_id}", None, {"kind": kind, "label": name}
        )
        url = pairing_url(settings, code)
        pairing = {"token_id": token_id, "label": name, "kind": kind.value, "url": url}
        pairing["qr"] = qr_png(url)
        return await render(request, who, site, lang, pairing, status=201)

    @api.post("/devices/{token_id}/revoke")
    async def revoke_device(
        who: Keeper, token_id: Annotated[str, Path(pattern=r"^[0-9a-f]{1,32}$")]
    ) -> Response:
        doc = await store.device(token_id)
        if doc is None:
            raise DeviceNotFound()
        site = str(doc["site"])
        if not who.at(site):
            raise wrong_site(who, site)
        await store.revoke_token(token_id)
        await audit.record(who, "device_revoke", site, f"device:{token_id}", None, None)
        return RedirectResponse(f"/devices?site={quote(site, safe='')}", status_code=303)

    @api.get("/device/pair/{code}")
    async def use_pairing(
        request: Request, code: Annotated[str, Path(min_length=8, max_length=64)]
    ) -> Response:
        """The link in a pairing QR code: works once, within minutes of being shown; the
        device keeps a new token of its own in an HttpOnly cookie and opens its page."""
        paired = await store.pair(code)
        if paired is None:
            raise PairingUnknown()
        token, who = paired
        await audit.record(who, "device_paired", who.site, f"device:{who.token_id}", None, None)
        response = RedirectResponse(device_home(settings, who), status_code=303)
        response.set_cookie(
            DEVICE_COOKIE,
            token,
            max_age=DEVICE_COOKIE_SECONDS,
            httponly=True,
            # lax: the device's next page loads on a navigation begun by the camera app.
            samesite="lax",
            secure=_https(request),
        )
        return response

    return api
