"""The site catalogue (sites, services, counters, session rules): YAML in deploy/sites/."""

from __future__ import annotations

from datetime import date, time
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from giliran.contracts.events import CounterId, ServiceCode
from giliran.contracts.subjects import SiteSlug


class Text(BaseModel):
    """Words shown to people: Bahasa Indonesia first, English second."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    en: str


class ServiceDef(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    code: ServiceCode
    prefix: str = Field(pattern=r"^[A-Z]{1,3}$", description="ticket number prefix, e.g. A")
    name: Text
    documents: list[Text] = Field(default_factory=list)
    # Adminduk services are free by law (UU 24/2013 Pasal 79A); the product never shows a price.
    free: bool = True


class CounterDef(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: CounterId
    name: Text
    services: list[ServiceCode] = Field(min_length=1)


HolidayCategory = Literal["PUBLIC", "GOVERNMENT"]


def _public_and_government() -> list[HolidayCategory]:
    return ["PUBLIC", "GOVERNMENT"]


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

    @model_validator(mode="after")
    def _opens_before_closes(self) -> ScheduleRule:
        if self.opens >= self.closes:
            raise ValueError("opens must be before closes")
        return self


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
        return self

    def service(self, code: str) -> ServiceDef | None:
        return next((s for s in self.services if s.code == code), None)

    def counter(self, counter_id: str) -> CounterDef | None:
        return next((c for c in self.counters if c.id == counter_id), None)


class Catalogue(BaseModel):
    model_config = ConfigDict(frozen=True)

    sites: dict[str, SiteDef]

    def site(self, slug: str) -> SiteDef | None:
        return self.sites.get(slug)


def load_catalogue(directory: Path) -> Catalogue:
    """Every `*.yaml` in `directory` that declares a `site`; an invalid file fails start-up."""
    if not directory.is_dir():
        raise FileNotFoundError(
            f"catalogue directory {directory} does not exist (GILIRAN_CATALOGUE_DIR)"
        )
    sites: dict[str, SiteDef] = {}
    for path in sorted(directory.glob("*.yaml")):
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict) or "site" not in raw:
            continue
        site = SiteDef.model_validate(raw)
        if site.site in sites:
            raise ValueError(f"site {site.site} is defined twice ({path})")
        sites[site.site] = site
    if not sites:
        # A service with no sites would look healthy and refuse every request.
        raise ValueError(f"no site is defined in {directory} (GILIRAN_CATALOGUE_DIR)")
    return Catalogue(sites=sites)
