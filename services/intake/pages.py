"""Intake's server-rendered pages (Jinja2, no CDN, Bahasa Indonesia first with an English
toggle): registration, kiosk and printed ticket, status with server push, SKM survey."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path as FilePath
from typing import Annotated, Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import segno
from fastapi import APIRouter, Depends, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError

from giliran.auth import Principal, Role, requires
from giliran.catalogue import SiteDef
from giliran.contracts import Channel, Language, TicketStatus
from giliran.errors import DomainError
from giliran.hardening import client_key, limited_address
from giliran.settings import KioskPrinter, is_loopback_url
from services.intake import offer, sessions
from services.intake.errors import NikRequired
from services.intake.handlers import Intake, Scores, SubmitRequest
from services.intake.http import LinkResent, Links, Site, Status, Token
from services.intake.models import ResendLink
from services.intake.printing import PrinterFailed, escpos_bytes, send_to_printer
from services.intake.problems import describe
from services.intake.skm import QUESTIONS
from services.intake.slip import Paper, Slip, slip_for
from services.intake.views import StatusView

PAGES = Jinja2Templates(directory=FilePath(__file__).parent / "pages")
Lang = Annotated[str, Query(pattern=r"^(id|en)$")]
# The kiosk pages register walk-ins straight into the line: a kiosk's sign-in at that site only
# (a kiosk account's session cookie, or its token), strangers are sent to /login (ADR 0102).
KioskDevice = Annotated[Principal, Depends(requires(Role.KIOSK, site_from="site", page=True))]


def qr_svg(url: str) -> str:
    """The status link as an inline SVG QR code (segno: no image files, no network)."""
    # omitsize: a viewBox only, so CSS sizes it (with width/height set, a smaller box crops it).
    return str(segno.make(url, error="m").svg_inline(border=2, omitsize=True))


def _texts(lang: str) -> Any:
    def pick(text_id: str, text_en: str) -> str:
        return text_en if lang == "en" else text_id

    return pick


def _render(request: Request, name: str, lang: str, status: int = 200, **context: Any) -> Response:
    params = dict(request.query_params)
    params["lang"] = "en" if lang == "id" else "id"
    site = context.get("site")
    if request.method == "POST" and isinstance(site, SiteDef):  # back to the form's GET page
        params["site"] = site.site
    toggle = f"{request.url.path}?{urlencode(params)}"
    return PAGES.TemplateResponse(
        request,
        name,
        # csrf: a paired kiosk's forms carry the token that goes with its device cookie.
        {
            "lang": lang,
            "_": _texts(lang),
            "toggle": toggle,
            "csrf": getattr(request.state, "csrf", ""),
            **context,
        },
        status_code=status,
    )


def _error_text(exc: Exception, lang: str) -> tuple[str, str | None]:
    """A domain or validation error as one sentence in the page's language, and its field."""
    if isinstance(exc, DomainError):
        return (exc.message_en if lang == "en" else exc.message_id), getattr(exc, "field", None)
    if isinstance(exc, ValidationError):
        first = describe(dict(exc.errors()[0]))
        return first["message_en" if lang == "en" else "message_id"], first["field"]
    raise exc


def router(
    intake: Intake,
    status: Status,
    links: Links,
    *,
    wait_seconds: float,
    printers: Mapping[str, KioskPrinter] | None = None,
) -> APIRouter:
    pages = APIRouter(tags=["pages"], include_in_schema=False)
    kiosk_printers = dict(printers or {})

    def printer_of(site: str, kiosk: Principal) -> KioskPrinter | None:
        """The signed-in kiosk's printer (GILIRAN_KIOSK_PRINTERS by the kiosk's name: its paired
        device label or account), only at the printer's own site."""
        printer = kiosk_printers.get(kiosk.name)
        return printer if printer is not None and printer.site == site else None

    async def issued_view(token: str, wait_until: float | None = None) -> StatusView:
        """The request as a slip shows it: intake's record, or the queue's answer (`issuing`)
        while the record lacks a ticket, since a kiosk's wait may end on the queue's notice
        before intake's ticket consumer writes it (ADR 0228).

        `wait_until` (loop time): a ticket still missing then makes it wait once more, at most
        until that moment, for the consumer's write or the queue's next notice. The usual case
        never does; it is for a wait that ended on a notice the queue's answer does not confirm
        (a forged one, or a queue too busy to answer in time), so the slip still gets its
        number. Once, not in a loop: a request the queue answers oddly must not spin until
        then."""
        view = await status.view(token, issuing=True)
        left = (wait_until or 0.0) - asyncio.get_running_loop().time()
        if view.pending_services and left > 0:
            await intake.wait_for_tickets(view.request_id, left)
            view = await status.view(token, issuing=True)
        return view

    async def slip_of(
        request: Request, token: str, lang: str, wait_until: float | None = None
    ) -> tuple[Slip, SiteDef]:
        """The kiosk's slip, from `issued_view`."""
        view = await issued_view(token, wait_until)
        spec = intake.site(view.site)
        return slip_for(view, spec, lang, links.page(request, token), intake.clock()), spec

    async def to_the_ticket(
        request: Request,
        site: str,
        token: str,
        lang: str,
        kiosk: Principal,
        wait_until: float | None = None,
    ) -> RedirectResponse:
        """After a kiosk issued or checked in: print on the kiosk's ESC/POS printer if it has one
        (the page then only shows the ticket), else let the kiosk's browser print the page.

        Either way a registration's slip gets the same second wait (`wait_until`) before the
        kiosk moves on: the ESC/POS slip is built from it, and the browser is sent to its page
        only after it, so the page's own read finds the ticket in intake's record (or the
        queue's answer) as the ESC/POS slip did (ADR 0228)."""
        query = {"lang": lang}
        printer = printer_of(site, kiosk)
        if printer is not None:
            query["paper"] = str(printer.paper)
        if printer is not None and printer.escpos:
            slip, _spec = await slip_of(request, token, lang, wait_until)
            data = await asyncio.to_thread(
                escpos_bytes, slip, Paper(printer.paper), printer.profile
            )
            try:
                await send_to_printer(printer, data)
                query["printed"] = "1"
            except PrinterFailed:
                query |= {"printed": "0", "autoprint": "1"}
        else:
            # Nothing to wait for once the kiosk's wait is spent (a queue down): the page reads.
            if wait_until is not None and wait_until > asyncio.get_running_loop().time():
                await issued_view(token, wait_until)
            query["autoprint"] = "1"
        return RedirectResponse(f"/kiosk/ticket/{token}?{urlencode(query)}", status_code=303)

    async def session_choices(site: SiteDef) -> list[dict[str, Any]]:
        """The sessions online registration is open for now (the catalogue's admission rule)."""
        now = intake.clock()
        today = sessions.local_today(site, now)
        found = []
        for window in await intake.upcoming(site.site, site.booking.days_ahead):
            if window.cancelled:
                continue
            opens, closes = sessions.registration_window(window, site.admission, site.timezone)
            if not opens <= now < closes:
                continue
            found.append(
                {
                    "id": window.session_id,
                    "today": window.local_date == today,
                    "when_id": sessions.format_local(window.opens_at, site.timezone),
                    "when_en": sessions.format_local(window.opens_at, site.timezone, "en"),
                    "label": window.label,
                    "slots": [
                        {
                            "value": s.isoformat(),
                            "local": f"{s.astimezone(ZoneInfo(site.timezone)):%H.%M}",
                        }
                        for s in sessions.slots(window, site.booking.slot_minutes)
                    ],
                }
            )
        return found

    @pages.get("/jadwal/{site}", response_class=HTMLResponse)
    async def schedule(request: Request, site: Site, lang: Lang = "id") -> Response:
        """The public session list: when each session runs, when online registration opens,
        places left per service, what it costs and what to bring, in plain Bahasa Indonesia."""
        spec = intake.site(site)
        return _render(
            request,
            "schedule.html",
            lang,
            site=spec,
            sessions=await offer.schedule(intake, spec),
            services=await offer.service_rows(intake, spec, None),
        )

    @pages.get("/", response_class=HTMLResponse)
    async def index(request: Request, lang: Lang = "id") -> Response:
        return _render(request, "index.html", lang, sites=list(intake.catalogue.sites.values()))

    @pages.get("/daftar", response_class=HTMLResponse)
    async def register_form(
        request: Request,
        site: Annotated[str, Query(max_length=63)] = "cikarang-utara",
        lang: Lang = "id",
    ) -> Response:
        spec = intake.site(site)
        return _render(
            request,
            "register.html",
            lang,
            site=spec,
            choices=await session_choices(spec),
            services=await offer.service_rows(intake, spec, None),
            upcoming=await offer.next_registration(intake, spec),
            challenge=intake.challenge(spec.site)[0],
            closed_days=sessions.closed_days(
                spec,
                intake.clock(),
                intake.holidays,
                await intake.overrides(site),
                days=spec.booking.days_ahead,
            ),
            form={},
            error=None,
            field=None,
        )

    @pages.post("/daftar", response_class=HTMLResponse)
    async def register(
        request: Request,
        site: Annotated[str, Form(max_length=63)],
        services: Annotated[list[str], Form()],
        name: Annotated[str, Form(max_length=100)] = "",
        nik: Annotated[str, Form(max_length=32)] = "",
        phone: Annotated[str, Form(max_length=32)] = "",
        consent: Annotated[bool, Form()] = False,
        session_id: Annotated[str, Form(max_length=80)] = "",
        appointment_at: Annotated[str, Form(max_length=40)] = "",
        priority: Annotated[str, Form(max_length=20)] = "",
        lang: Annotated[str, Form(pattern=r"^(id|en)$")] = "id",
        challenge: Annotated[str, Form(max_length=200)] = "",
        nonce: Annotated[str, Form(max_length=40)] = "",
    ) -> Response:
        spec = intake.site(site)
        form = {
            "services": services,
            "name": name,
            "nik": nik,
            "phone": phone,
            "consent": consent,
            "session_id": session_id,
            "appointment_at": appointment_at,
            "priority": priority,
        }
        try:
            command = SubmitRequest.model_validate(
                {
                    "site": site,
                    "services": services,
                    "name": name,
                    "nik": nik or None,
                    "phone": phone or None,
                    "consent": consent,
                    "session_id": session_id or None,
                    "appointment_at": appointment_at or None,
                    "priority": priority or None,
                    "channel": Channel.ONLINE,
                    "language": Language(lang),
                    "proof": {"challenge": challenge, "nonce": nonce}
                    if challenge and nonce
                    else None,
                }
            )
            result = await intake.submit(command, limited_address(request, intake.limits.exempt))
        except (DomainError, ValidationError) as exc:
            message, field = _error_text(exc, lang)
            return _render(
                request,
                "register.html",
                lang,
                status=422
                if isinstance(exc, ValidationError)
                else getattr(exc, "http_status", 422),
                site=spec,
                choices=await session_choices(spec),
                services=await offer.service_rows(intake, spec, None),
                upcoming=await offer.next_registration(intake, spec),
                challenge=intake.challenge(spec.site)[0],
                form=form,
                error=message,
                field=field,
            )
        return RedirectResponse(f"/s/{result.doc['token']}?lang={lang}", status_code=303)

    @pages.get("/kirim-ulang", response_class=HTMLResponse)
    async def resend_form(
        request: Request,
        site: Annotated[str, Query(max_length=63)] = "cikarang-utara",
        lang: Lang = "id",
    ) -> Response:
        """Ask for the status link again: it goes to the registered phone/e-mail only."""
        spec = intake.site(site)
        return _render(
            request, "resend.html", lang, site=spec, form={}, error=None, field=None, sent=None
        )

    @pages.post("/kirim-ulang", response_class=HTMLResponse)
    async def resend(
        request: Request,
        site: Annotated[str, Form(max_length=63)],
        nik: Annotated[str, Form(max_length=32)] = "",
        contact: Annotated[str, Form(max_length=254)] = "",
        lang: Annotated[str, Form(pattern=r"^(id|en)$")] = "id",
    ) -> Response:
        spec = intake.site(site)
        contact = contact.strip()
        by_email = "@" in contact
        try:
            command = ResendLink.model_validate(
                {
                    "site": site,
                    "nik": nik,
                    "phone": None if by_email else contact or None,
                    "email": contact if by_email else None,
                }
            )
            await intake.request_link(command, client_key(request))
        except (DomainError, ValidationError) as exc:
            message, field = _error_text(exc, lang)
            return _render(
                request,
                "resend.html",
                lang,
                status=exc.http_status if isinstance(exc, DomainError) else 422,
                site=spec,
                form={"nik": nik, "contact": contact},
                error=message,
                field="contact" if field in ("phone", "email") else field,
                sent=None,
            )
        done = LinkResent()
        return _render(
            request,
            "resend.html",
            lang,
            status=202,
            site=spec,
            form={},
            error=None,
            field=None,
            sent=done.message_en if lang == "en" else done.message_id,
        )

    @pages.get("/kiosk/{site}", response_class=HTMLResponse)
    async def kiosk(request: Request, site: Site, who: KioskDevice, lang: Lang = "id") -> Response:
        spec = intake.site(site)
        now = intake.clock()
        try:
            window = sessions.session_for_registration(
                spec,
                now,
                intake.holidays,
                await intake._adhoc_sessions(site, now),
                await intake.overrides(site),
            )
            closed_message = None
        except DomainError as exc:
            window, closed_message = None, exc.message_en if lang == "en" else exc.message_id
        # `who` (a kiosk's sign-in: a paired device's cookie, a token or a session) has set the
        # CSRF token its forms carry (_render puts it in every page).
        return _render(
            request,
            "kiosk.html",
            lang,
            site=spec,
            window=window,
            closed=closed_message,
            services=await offer.service_rows(intake, spec, window),
            upcoming=await offer.next_registration(intake, spec),
            error=None,
        )

    @pages.post("/kiosk/{site}", response_class=HTMLResponse)
    async def kiosk_take(
        request: Request,
        site: Site,
        who: KioskDevice,
        service: Annotated[str, Form(max_length=32)],
        priority: Annotated[str, Form(max_length=20)] = "",
        nik: Annotated[str, Form(max_length=32)] = "",
        lang: Annotated[str, Form(pattern=r"^(id|en)$")] = "id",
    ) -> Response:
        spec = intake.site(site)
        window = await offer.current_window(intake, spec)
        try:
            command = SubmitRequest.model_validate(
                {
                    "site": site,
                    "services": [service],
                    "name": "Pengunjung kios",
                    "nik": nik or None,
                    "channel": Channel.KIOSK,
                    "language": Language(lang),
                    "priority": priority or None,
                }
            )
            client = limited_address(request, intake.limits.exempt)
            result = await intake.submit(command, client, who)
        except (DomainError, ValidationError) as exc:
            message, _field = _error_text(exc, lang)
            return _render(
                request,
                "kiosk.html",
                lang,
                status=exc.http_status if isinstance(exc, DomainError) else 422,
                site=spec,
                window=window,
                closed=None,
                services=await offer.service_rows(intake, spec, window),
                upcoming=None,
                error=message,
                nik_wanted=isinstance(exc, NikRequired),
            )
        wait_until = asyncio.get_running_loop().time() + wait_seconds
        await intake.wait_for_tickets(result.doc["_id"], wait_seconds, result.doc)
        return await to_the_ticket(request, site, result.doc["token"], lang, who, wait_until)

    @pages.post("/kiosk/{site}/check-in", response_class=HTMLResponse)
    async def kiosk_check_in(
        request: Request,
        site: Site,
        who: KioskDevice,
        code: Annotated[str, Form(min_length=1, max_length=300)],
        lang: Annotated[str, Form(pattern=r"^(id|en)$")] = "id",
    ) -> Response:
        spec = intake.site(site)
        try:
            client = client_key(request)
            doc, _changed = await intake.check_in(site, code, client, who)
        except DomainError as exc:
            message, _field = _error_text(exc, lang)
            return _render(
                request,
                "kiosk.html",
                lang,
                status=exc.http_status,
                site=spec,
                window=None,
                closed=None,
                services=await offer.service_rows(intake, spec, None),
                upcoming=None,
                error=message,
            )
        return await to_the_ticket(request, site, doc["token"], lang, who)

    @pages.get("/kiosk/ticket/{token}", response_class=HTMLResponse)
    async def ticket(
        request: Request,
        token: Token,
        lang: Lang = "id",
        autoprint: int = 0,
        paper: Annotated[Paper, Query()] = Paper.MM80,
        printed: Annotated[int | None, Query(ge=0, le=1)] = None,
    ) -> Response:
        """The ticket on the kiosk's screen, and printed by its browser on the roll's width
        (?paper=58|80: the kiosk's printer setting, else 80 mm)."""
        slip, spec = await slip_of(request, token, lang)
        failed = PrinterFailed("")
        return _render(
            request,
            "ticket.html",
            lang,
            site=spec,
            slip=slip,
            qr=qr_svg(slip.status_url),
            paper=int(paper),
            only_this_box=is_loopback_url(slip.status_url),
            printed=printed,
            printer_failed=failed.message_en if lang == "en" else failed.message_id,
            autoprint=bool(autoprint),
        )

    @pages.get("/s/{token}", response_class=HTMLResponse)
    async def status_page(request: Request, token: Token, lang: Lang = "id") -> Response:
        view = await status.view(token)
        spec = intake.site(view.site)
        return _render(
            request,
            "status.html",
            lang,
            view=view,
            site=spec,
            token=token,
            qr=qr_svg(links.page(request, token)),
        )

    @pages.get("/survey/{token}/{ticket_id}", response_class=HTMLResponse)
    async def survey_form(
        request: Request,
        token: Token,
        ticket_id: Annotated[str, Path(max_length=128)],
        lang: Lang = "id",
    ) -> Response:
        view = await status.view(token)
        line = next((t for t in view.tickets if t.ticket_id == ticket_id), None)
        return _render(
            request,
            "survey.html",
            lang,
            view=view,
            line=line,
            token=token,
            questions=QUESTIONS,
            error=None,
            done=False,
        )

    @pages.post("/survey/{token}/{ticket_id}", response_class=HTMLResponse)
    async def survey(
        request: Request,
        token: Token,
        ticket_id: Annotated[str, Path(max_length=128)],
    ) -> Response:
        form = await request.form()
        lang = str(form.get("lang", "id"))
        lang = lang if lang in ("id", "en") else "id"
        view = await status.view(token)
        line = next((t for t in view.tickets if t.ticket_id == ticket_id), None)
        try:
            scores = Scores.model_validate({q.code: form.get(q.code) for q in QUESTIONS})
            await intake.submit_feedback(token, ticket_id, scores)
        except (DomainError, ValidationError) as exc:
            message, _field = _error_text(exc, lang)
            return _render(
                request,
                "survey.html",
                lang,
                status=422,
                view=view,
                line=line,
                token=token,
                questions=QUESTIONS,
                error=message,
                done=False,
            )
        return _render(
            request,
            "survey.html",
            lang,
            view=view,
            line=line,
            token=token,
            questions=QUESTIONS,
            error=None,
            done=True,
        )

    return pages


__all__ = ["TicketStatus", "router"]
