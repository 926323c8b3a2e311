"""The BOTRAM fair template: a site per kecamatan of Kabupaten Bekasi, with agencies and booths."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from giliran.catalogue import load_catalogue
from giliran.settings import REPO_ROOT

CATALOGUE = load_catalogue(REPO_ROOT / "deploy" / "sites")


def test_the_fair_can_be_held_at_any_of_the_23_kecamatan() -> None:
    fairs = {s.kemendagri_code: s for s in CATALOGUE.sites.values() if s.programme == "BOTRAM"}
    assert sorted(fairs) == [f"32.16.{n:02d}" for n in range(1, 24)]
    assert fairs["32.16.09"].site == "botram-cikarang-utara"
    assert fairs["32.16.09"].name.id == "BOTRAM Kecamatan Cikarang Utara"
    # The MSC site is still its own site next to the fair held in the same kecamatan.
    assert CATALOGUE.sites["cikarang-utara"].programme == "MSC"


def test_a_fair_has_every_agency_at_a_booth() -> None:
    fair = CATALOGUE.sites["botram-setu"]
    assert fair.schedule.rule == "dates"  # nothing opens until an admin adds a fair day
    agencies = {s.agency for s in fair.services}
    assert agencies == {a.id for a in fair.agencies}
    assert {
        "disdukcapil",
        "dinkes",
        "bank-bjb",
        "dpmptsp",
        "diskominfo",
        "polres",
        "bapenda",
        "bpjs",
    } <= agencies
    served = {code for c in fair.counters for code in c.services}
    assert served == {s.code for s in fair.services}  # every service has a booth
    assert all(c.hint is not None for c in fair.counters)
    adminduk = [s for s in fair.services if s.agency == "disdukcapil"]
    assert all(s.free and s.requires_nik for s in adminduk)
    assert not fair.service("SKCK").free  # type: ignore[union-attr]  # police fees (PNBP)


def test_a_template_without_venues_or_with_a_bad_agency_fails(tmp_path: Path) -> None:
    raw = yaml.safe_load((REPO_ROOT / "deploy" / "sites" / "botram.yaml").read_text())
    (tmp_path / "a.yaml").write_text(yaml.safe_dump({**raw, "venues": []}))
    with pytest.raises(ValueError, match="no venues"):
        load_catalogue(tmp_path)
    services = [{**raw["services"][0], "agency": "nobody"}, *raw["services"][1:]]
    (tmp_path / "a.yaml").write_text(yaml.safe_dump({**raw, "services": services}))
    with pytest.raises(ValueError, match="unknown agency"):
        load_catalogue(tmp_path)
