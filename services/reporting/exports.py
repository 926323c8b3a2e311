"""Turn day summaries and the IKM into rows, CSV and XLSX (what a Camat opens in a spreadsheet)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from openpyxl import Workbook
from openpyxl.styles import Font

from services.reporting.handlers import DaySummary, SatisfactionReport

COLUMNS: tuple[tuple[str, str], ...] = (
    ("date", "Tanggal / Date"),
    ("site", "Lokasi / Site"),
    ("service", "Layanan / Service"),
    ("issued", "Tiket / Tickets"),
    ("called", "Dipanggil / Called"),
    ("completed", "Selesai / Completed"),
    ("wait_p50_min", "Tunggu p50 (menit) / Wait p50 (min)"),
    ("wait_p90_min", "Tunggu p90 (menit) / Wait p90 (min)"),
    ("wait_max_min", "Tunggu maks (menit) / Wait max (min)"),
    ("service_p50_min", "Layanan p50 (menit) / Service p50 (min)"),
    ("no_show", "Tidak hadir / No-shows"),
    ("within_target_pct", "Dalam target (%) / Within target (%)"),
    ("eta_quoted", "Tiket dengan perkiraan / Tickets quoted"),
    ("eta_within_10_pct", "Perkiraan tepat ±10 menit (%) / ETA within ±10 min (%)"),
    ("eta_median_error_min", "Selisih perkiraan median (menit) / ETA median error (min)"),
)
TOTAL = "SEMUA / ALL"


def _minutes(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds / 60, 1)


def _percent(share: float | None) -> float | None:
    return None if share is None else round(share * 100, 1)


def rows(summaries: Sequence[DaySummary]) -> list[dict[str, Any]]:
    """One row per day and service, then the day's total row."""
    result: list[dict[str, Any]] = []
    for day in summaries:
        parts: list[tuple[str, Any]] = [(s.service, s) for s in day.by_service]
        parts.append((TOTAL, day))
        for service, figures in parts:
            result.append(
                {
                    "date": day.date.isoformat(),
                    "site": day.site,
                    "service": service,
                    "issued": figures.issued,
                    "called": figures.called,
                    "completed": figures.completed,
                    "wait_p50_min": _minutes(figures.wait_seconds.p50),
                    "wait_p90_min": _minutes(figures.wait_seconds.p90),
                    "wait_max_min": _minutes(figures.wait_seconds.max),
                    "service_p50_min": _minutes(figures.service_seconds.p50),
                    "no_show": figures.no_show,
                    "within_target_pct": _percent(figures.within_target),
                    "eta_quoted": figures.eta.quoted if figures.eta else 0,
                    "eta_within_10_pct": _percent(figures.eta.within_10_min)
                    if figures.eta
                    else None,
                    "eta_median_error_min": _minutes(figures.eta.median_abs_error_seconds)
                    if figures.eta
                    else None,
                }
            )
    return result


def to_csv(table: Sequence[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([label for _, label in COLUMNS])
    for row in table:
        writer.writerow(["" if row[key] is None else row[key] for key, _ in COLUMNS])
    return out.getvalue()


def to_xlsx(table: Sequence[dict[str, Any]], satisfaction: SatisfactionReport) -> bytes:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "Ringkasan"
    sheet.append([label for _, label in COLUMNS])
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    for row in table:
        sheet.append([row[key] for key, _ in COLUMNS])
    ikm = book.create_sheet("IKM")
    ikm.append(["Unsur / Element", "Nama", "Name", "NRR"])
    for element in satisfaction.elements:
        ikm.append([element.element, element.name_id, element.name_en, element.nrr])
    ikm.append([])
    ikm.append(["IKM", satisfaction.ikm])
    ikm.append(["Mutu / Grade", satisfaction.grade.letter if satisfaction.grade else None])
    ikm.append(["Responden / Responses", satisfaction.responses])
    ikm.append(["Sampel minimum (Krejcie & Morgan)", satisfaction.required_sample])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()
