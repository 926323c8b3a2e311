"""The site catalogue (sites, services, counters, session rules): YAML in deploy/sites/."""

from __future__ import annotations

from datetime import date, time
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from giliran.contracts.events import CounterId, ServiceCode
from giliran.contracts.subjects import SiteSlug


class Text(BaseModel):
    """Words shown to people: Bahasa Indonesia first, English second."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    en: str


class FeeDef(BaseModel):
    """What a paid service costs (a state fee, PNBP) and where the citizen pays it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    amount_idr: int = Field(gt=0, description="the fee in rupiah")
    paid_at: Text = Field(description="where it is paid, e.g. the agency cashier")
    # What the amount does not cover, said in the same breath (SIM renewal: the health and
    # psychology checks are paid separately), so the sentence a citizen reads stays true.
    note: Text | None = None


class AdmissionRule(BaseModel):
    """Who joins a session's line, and when: the rules a kecamatan sets (docs/intake.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Online registration opens `opens_days_before` days before the session's date at
    # `opens_at` local time, and closes `closes_minutes_before_end` before the session ends.
    opens_days_before: int = Field(default=1, ge=0, le=90)
    opens_at: time = time(18, 0)
    closes_minutes_before_end: int = Field(default=30, ge=0, le=600)
    # An online registration (same day or ahead) is *arrived* only once checked in at the
    # kiosk or counter; until then it keeps its place but is not called...
    checkin_required: bool = True
    # ...and lapses this long after the session opens (or after registering, or after its
    # appointment slot, whichever is latest).
    checkin_grace_minutes: int = Field(default=30, ge=5, le=600)


class AntiBotRule(BaseModel):
    """Against one address filling a session (no third-party service): after `challenge_after`
    registrations from an address for a session, each further one must carry a proof of work;
    past `per_address_per_session` the address gets no more places in that session."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    challenge_after: int = Field(default=3, ge=0, le=1000)
    # Leading zero bits of SHA-256(challenge:nonce): 2^bits tries on average.
    challenge_bits: int = Field(default=16, ge=8, le=26)
    per_address_per_session: int = Field(default=10, ge=1, le=10_000)


class ServiceDef(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    code: ServiceCode
    prefix: str = Field(pattern=r"^[A-Z]{1,3}$", description="ticket number prefix, e.g. A")
    name: Text
    documents: list[Text] = Field(default_factory=list)
    # Adminduk services are free by law (UU 24/2013 Pasal 79A). A service that is not free names
    # its fee, so every message to a citizen can state it instead of calling it free.
    free: bool = True
    fee: FeeDef | None = None
    # Places per session (None: the site's capacity sizes it, else no limit); admins override
    # it per session in intake.
    quota: int | None = Field(default=None, ge=0)
    # Minutes one citizen takes at a counter (an estimate until the queue has measured it):
    # with the site's `admission.capacity_minutes` it sizes the quota and spends the budget.
    minutes: int | None = Field(default=None, ge=1, le=240)
    # The agency that runs it (BOTRAM fairs host many; MSC has one, the Disdukcapil).
    agency: str | None = None
    # Registration needs a NIK (adminduk documents are all NIK-based), online and at the kiosk.
    requires_nik: bool = False
    # This service's own admission rules, when they differ from the site's.
    admission: AdmissionRule | None = None

    @model_validator(mode="after")
    def _fee_matches_free(self) -> ServiceDef:
        if self.free and self.fee is not None:
            raise ValueError(f"service {self.code}: a free service has no fee")
        if not self.free and self.fee is None:
            raise ValueError(f"service {self.code}: a paid service must state its fee (fee:)")
        return self

    def cost(self, lang: str = "id") -> str:
        """One sentence on what the service costs, for every place that tells a citizen."""
        if self.fee is None:
            return "This service is FREE." if lang == "en" else "Layanan ini GRATIS."
        amount = f"{self.fee.amount_idr:,}".replace(",", ".")
        note = self.fee.note
        if lang == "en":
            return f"Fee: Rp {amount}, paid at {self.fee.paid_at.en}." + (
                f" {note.en}" if note else ""
            )
        return f"Biaya: Rp {amount}, dibayar di {self.fee.paid_at.id}." + (
            f" {note.id}" if note else ""
        )


class CounterDef(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: CounterId
    name: Text
    services: list[ServiceCode] = Field(min_length=1)
    # Where to find it, printed on tickets ("Tenda B, sebelah panggung").
    hint: Text | None = None


HolidayCategory = Literal["PUBLIC", "GOVERNMENT"]


def _public_and_government() -> list[HolidayCategory]:
    return ["PUBLIC", "GOVERNMENT"]


class HolidayClosure(BaseModel):
    """Holidays a site never opens on by default: every holiday whose Indonesian name contains
    `match` (so "Idul Fitri" also takes its cuti bersama), and the days between such holidays
    that are at most `span_gap_days` apart (a Sunday inside the Lebaran break). An admin can
    still open any one date (docs/decisions/0135)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    match: str = Field(min_length=3, max_length=60)
    reason: Text
    span_gap_days: int = Field(default=3, ge=1, le=7)


def _eid_closures() -> list[HolidayClosure]:
    # DOMAIN.md: closed on Idul Fitri and Idul Adha and the cuti bersama around them (staff are
    # on leave, families travel: mudik); open on every other holiday.
    return [
        HolidayClosure(
            match="Idul Fitri",
            reason=Text(
                id="Libur Idul Fitri dan cuti bersama: petugas cuti, warga mudik",
                en="Eid al-Fitr and its collective leave: staff on leave, families travelling",
            ),
        ),
        HolidayClosure(
            match="Idul Adha",
            reason=Text(
                id="Libur Idul Adha dan cuti bersama: petugas cuti",
                en="Eid al-Adha and its collective leave: staff on leave",
            ),
        ),
    ]


class ScheduleRule(BaseModel):
    """When sessions run. MSC 9-11: every Sunday and public holiday, 09:00-11:00 local time."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rule: Literal["sundays_and_holidays", "dates"]
    opens: time
    closes: time
    # `holidays` categories for ID; cuti bersama is GOVERNMENT.
    holiday_categories: list[HolidayCategory] = Field(default_factory=_public_and_government)
    extra_dates: list[date] = Field(default_factory=list, description="admin-added open dates")
    closed_dates: list[date] = Field(default_factory=list, description="office marked closed")
    # Holidays that close the site whatever the rule says (overridable per date by an admin).
    closed_holidays: list[HolidayClosure] = Field(default_factory=_eid_closures)

    @model_validator(mode="after")
    def _opens_before_closes(self) -> ScheduleRule:
        if self.opens >= self.closes:
            raise ValueError("opens must be before closes")
        return self


class AgencyDef(BaseModel):
    """An agency with a booth at a fair (Disdukcapil, Dinkes, Polres, Bapenda, BPJS...)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9-]{1,32}$")
    name: Text


class BookingRule(BaseModel):
    """Online pre-registration: how far ahead it opens, appointment slots and check-in."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    days_ahead: int = Field(default=7, ge=0, le=90)
    slot_minutes: int = Field(default=30, ge=5, le=240)
    slot_capacity: int = Field(default=10, ge=1, le=10_000)
    # A booking holder may check in this long before the session opens.
    checkin_early_minutes: int = Field(default=60, ge=0, le=240)


class SiteDef(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    site: SiteSlug
    name: Text
    kemendagri_code: str = Field(pattern=r"^[0-9]{2}\.[0-9]{2}\.[0-9]{2}$")
    programme: Literal["MSC", "BOTRAM"]
    timezone: str = "Asia/Jakarta"
    schedule: ScheduleRule
    services: list[ServiceDef] = Field(min_length=1)
    counters: list[CounterDef] = Field(min_length=1)
    agencies: list[AgencyDef] = Field(default_factory=list)
    booking: BookingRule = Field(default_factory=BookingRule)
    admission: AdmissionRule = Field(default_factory=AdmissionRule)
    antibot: AntiBotRule = Field(default_factory=AntiBotRule)
    # Counter-minutes a session offers (MSC: 4 counters x 120 minutes = 480). With services'
    # `minutes`, each registration spends its service's minutes from this budget, so the
    # services' quotas together never promise more than the counters can serve.
    capacity_minutes: int | None = Field(default=None, ge=1, le=100_000)
    # Services one request may name: what one visit really needs. A higher number only helps
    # someone filling a session's places in few requests (the kiosk needs no NIK).
    max_services_per_request: int = Field(default=3, ge=1, le=10)

    @model_validator(mode="after")
    def _consistent(self) -> SiteDef:
        codes = [s.code for s in self.services]
        prefixes = [s.prefix for s in self.services]
        if len(set(codes)) != len(codes):
            raise ValueError("service codes must be unique within a site")
        if len(set(prefixes)) != len(prefixes):
            raise ValueError("ticket prefixes must be unique within a site")
        known = set(codes)
        for counter in self.counters:
            unknown = [c for c in counter.services if c not in known]
            if unknown:
                raise ValueError(f"counter {counter.id} serves unknown services {unknown}")
        agencies = {a.id for a in self.agencies}
        for service in self.services:
            if service.agency is not None and service.agency not in agencies:
                raise ValueError(f"service {service.code} names unknown agency {service.agency}")
        return self

    def service(self, code: str) -> ServiceDef | None:
        return next((s for s in self.services if s.code == code), None)

    def admission_for(self, service: ServiceDef) -> AdmissionRule:
        return service.admission or self.admission

    def quota_of(self, service: ServiceDef) -> int | None:
        """A service's places per session: its own `quota`, else as many as the session's
        counter-minutes allow of it alone (capacity ÷ minutes), else no limit."""
        if service.quota is not None:
            return service.quota
        if self.capacity_minutes is not None and service.minutes is not None:
            return self.capacity_minutes // service.minutes
        return None

    def quota_reason(self, service: ServiceDef) -> str:
        """How `quota_of` came about, for the admin page ("480 ÷ 10 menit")."""
        if service.quota is not None:
            return "katalog"
        if self.capacity_minutes is not None and service.minutes is not None:
            return f"{self.capacity_minutes} ÷ {service.minutes} menit"
        return "tanpa batas"

    def counter(self, counter_id: str) -> CounterDef | None:
        return next((c for c in self.counters if c.id == counter_id), None)


class Venue(BaseModel):
    """A place a fair template can be held: a kecamatan of the kabupaten."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    slug: str = Field(pattern=r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
    name: str
    kemendagri_code: str = Field(pattern=r"^[0-9]{2}\.[0-9]{2}\.[0-9]{2}$")


class FairRotation(BaseModel):
    """How a rotating fair (BOTRAM) moves: one fair day a week on `weekday`, at the venues in
    `order` (default: the template's venue list), the first at `anchor`. The venue of a fair day
    follows from how many fair days were held since the anchor, so every quarter's plan follows
    the last without keeping a cursor (docs/decisions/0136)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    weekday: int = Field(default=5, ge=0, le=6, description="0 Monday ... 5 Saturday, 6 Sunday")
    anchor: date
    order: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _anchor_on_weekday(self) -> FairRotation:
        if self.anchor.weekday() != self.weekday:
            raise ValueError(
                f"rotation anchor {self.anchor} does not fall on weekday {self.weekday}"
            )
        if len(set(self.order)) != len(self.order):
            raise ValueError("a venue appears twice in the rotation order")
        return self


class Fair(BaseModel):
    """A fair template that rotates over venues: its sites are `<template>-<venue>`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    template: str
    timezone: str = "Asia/Jakarta"
    venues: list[Venue] = Field(min_length=1)
    rotation: FairRotation
    schedule: ScheduleRule

    @property
    def order(self) -> list[Venue]:
        by_slug = {v.slug: v for v in self.venues}
        return [by_slug[s] for s in self.rotation.order] if self.rotation.order else self.venues

    def site_of(self, venue: str) -> str:
        return f"{self.template}-{venue}"

    def venue(self, slug: str) -> Venue | None:
        return next((v for v in self.venues if v.slug == slug), None)

    @model_validator(mode="after")
    def _order_names_venues(self) -> Fair:
        known = {v.slug for v in self.venues}
        unknown = [s for s in self.rotation.order if s not in known]
        if unknown:
            raise ValueError(f"fair {self.template}: rotation names unknown venues {unknown}")
        return self


class Catalogue(BaseModel):
    model_config = ConfigDict(frozen=True)

    sites: dict[str, SiteDef]
    # Rotating fairs (templates with a `rotation:`), by template name.
    fairs: dict[str, Fair] = Field(default_factory=dict)

    def site(self, slug: str) -> SiteDef | None:
        return self.sites.get(slug)


def expand_template(raw: dict[str, Any]) -> list[SiteDef]:
    """A fair template (BOTRAM) becomes one site per venue, `<template>-<venue>`, so every
    service (the queue too) knows the fair's booths wherever an admin schedules it; `{venue}` in
    the names is replaced by the kecamatan's name."""
    body = {k: v for k, v in raw.items() if k not in ("template", "venues", "rotation")}
    venues = [Venue.model_validate(v) for v in raw.get("venues") or []]
    if not venues:
        raise ValueError(f"template {raw.get('template')!r} lists no venues")
    sites = []
    for venue in venues:
        name = body.get("name") or {}
        sites.append(
            SiteDef.model_validate(
                {
                    **body,
                    "site": f"{raw['template']}-{venue.slug}",
                    "kemendagri_code": venue.kemendagri_code,
                    "name": {k: str(v).replace("{venue}", venue.name) for k, v in name.items()},
                }
            )
        )
    return sites


def fair_of(raw: dict[str, Any]) -> Fair:
    """A template with a `rotation:` as a fair whose plan can be generated (services/intake)."""
    return Fair.model_validate(
        {
            "template": raw["template"],
            "timezone": raw.get("timezone", "Asia/Jakarta"),
            "venues": raw.get("venues") or [],
            "rotation": raw["rotation"],
            "schedule": raw["schedule"],
        }
    )


def load_catalogue(directory: Path) -> Catalogue:
    """Every `*.yaml` in `directory` that declares a `site` (or a `template` with `venues`, which
    becomes a site per venue); an invalid file fails start-up."""
    if not directory.is_dir():
        raise FileNotFoundError(
            f"catalogue directory {directory} does not exist (GILIRAN_CATALOGUE_DIR)"
        )
    sites: dict[str, SiteDef] = {}
    fairs: dict[str, Fair] = {}
    for path in sorted(directory.glob("*.yaml")):
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        if isinstance(raw, dict) and "template" in raw:
            found = expand_template(raw)
            if raw.get("rotation") is not None:
                fair = fair_of(raw)
                fairs[fair.template] = fair
        elif isinstance(raw, dict) and "site" in raw:
            found = [SiteDef.model_validate(raw)]
        else:
            continue
        for site in found:
            if site.site in sites:
                raise ValueError(f"site {site.site} is defined twice ({path})")
            sites[site.site] = site
    if not sites:
        # A service with no sites would look healthy and refuse every request.
        raise ValueError(f"no site is defined in {directory} (GILIRAN_CATALOGUE_DIR)")
    return Catalogue(sites=sites, fairs=fairs)
