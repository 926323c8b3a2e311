"""The site catalogue: the shipped YAML is valid, and inconsistent YAML fails loudly."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from giliran.catalogue import load_catalogue
from giliran.settings import REPO_ROOT

ADMINDUK = {
    "KTP-REKAM", "KTP-CETAK", "KTP-GANTI", "KTP-UBAH", "KK-BARU", "KK-UBAH", "KK-GANTI",
    "AKTA-LAHIR", "AKTA-MATI", "KIA", "PINDAH", "DATANG", "IKD", "KONSULTASI",
}  # fmt: skip


def test_cikarang_utara_offers_the_adminduk_catalogue_free() -> None:
    site = load_catalogue(REPO_ROOT / "deploy" / "sites").sites["cikarang-utara"]
    assert site.kemendagri_code == "32.16.09"
    assert {s.code for s in site.services} == ADMINDUK
    assert all(s.free for s in site.services)
    assert all(s.name.id and s.name.en for s in site.services)
    assert [c.id for c in site.counters] == ["1", "2", "3", "4"]
    assert all(set(c.services) == ADMINDUK for c in site.counters)
    assert not {"I", "O"} & {s.prefix for s in site.services}  # never read as 1 and 0


def _write(tmp_path: Path, change: dict[str, object]) -> Path:
    raw = yaml.safe_load((REPO_ROOT / "deploy" / "sites" / "cikarang-utara.yaml").read_text())
    raw.update(change)
    (tmp_path / "site.yaml").write_text(yaml.safe_dump(raw))
    return tmp_path


def test_duplicate_prefixes_are_refused(tmp_path: Path) -> None:
    raw = yaml.safe_load((REPO_ROOT / "deploy" / "sites" / "cikarang-utara.yaml").read_text())
    raw["services"][1]["prefix"] = raw["services"][0]["prefix"]
    with pytest.raises(ValidationError, match="prefixes must be unique"):
        load_catalogue(_write(tmp_path, {"services": raw["services"]}))


def test_a_counter_serving_an_unknown_service_is_refused(tmp_path: Path) -> None:
    counters = [{"id": "1", "name": {"id": "Loket 1", "en": "Counter 1"}, "services": ["SIM-A"]}]
    with pytest.raises(ValidationError, match="unknown services"):
        load_catalogue(_write(tmp_path, {"counters": counters}))


def test_a_session_that_closes_before_it_opens_is_refused(tmp_path: Path) -> None:
    raw = yaml.safe_load((REPO_ROOT / "deploy" / "sites" / "cikarang-utara.yaml").read_text())
    raw["schedule"]["opens"] = "11:00"
    raw["schedule"]["closes"] = "09:00"
    with pytest.raises(ValidationError, match="opens must be before closes"):
        load_catalogue(_write(tmp_path, {"schedule": raw["schedule"]}))


def test_a_missing_or_empty_catalogue_stops_start_up(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_catalogue(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="no site"):
        load_catalogue(tmp_path)
