"""Every 422 from intake names the field at fault and how to fix it, in Bahasa Indonesia and
English (pydantic's own messages are English only and say what, not how)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from giliran.runtime import problem_response
from services.intake.errors import InvalidRequest, RateLimited

# How to fix a field, whatever pydantic said was wrong with it.
FIELD_HINTS: dict[str, tuple[str, str]] = {
    "site": (
        "pilih kode lokasi, misalnya cikarang-utara.",
        "choose a site code, e.g. cikarang-utara.",
    ),
    "services": (
        'pilih 1 sampai 10 kode layanan, misalnya ["KTP-CETAK"].',
        'choose 1 to 10 service codes, e.g. ["KTP-CETAK"].',
    ),
    "name": ("isi nama (1-100 huruf).", "enter a name (1-100 characters)."),
    "nik": (
        "isi 16 digit NIK dari KTP-el atau KK.",
        "enter the 16-digit NIK from the e-KTP or KK.",
    ),
    "phone": ("isi nomor HP seperti 0812xxxxxxxx.", "enter a mobile number such as 0812xxxxxxxx."),
    "email": (
        "isi alamat e-mail seperti nama@contoh.id.",
        "enter an e-mail such as name@example.id.",
    ),
    "consent": ("isi true atau false.", "use true or false."),
    "channel": ("gunakan online, kiosk atau counter.", "use online, kiosk or counter."),
    "language": ("gunakan id atau en.", "use id or en."),
    "session_id": (
        "pilih sesi dari /api/v1/sites/{site}/sessions.",
        "choose a session from /api/v1/sites/{site}/sessions.",
    ),
    "appointment_at": (
        "isi waktu awal slot dengan zona waktu, misalnya 2026-11-29T09:30:00+07:00.",
        "give a slot start with a time zone, e.g. 2026-11-29T09:30:00+07:00.",
    ),
    "priority": (
        "gunakan disability, pregnancy, infant atau elderly.",
        "use disability, pregnancy, infant or elderly.",
    ),
    "code": (
        "isi 6 huruf/angka kode check-in atau pindai kode QR.",
        "enter the 6-character check-in code or scan the QR code.",
    ),
    "scores": ("jawab U1 sampai U9 dengan angka 1-4.", "answer U1 to U9 with a number 1-4."),
    "token": ("gunakan tautan status dari tiket Anda.", "use the status link from your ticket."),
    "ticket_id": ("gunakan tiket dari halaman status.", "use a ticket from the status page."),
    "date": ("isi tanggal YYYY-MM-DD.", "give a date as YYYY-MM-DD."),
    "quotas": (
        "isi kode layanan dengan angka 0 atau lebih (null: tanpa batas).",
        "map service codes to 0 or more (null: no limit).",
    ),
}

# What went wrong, by pydantic error type.
PROBLEMS: dict[str, tuple[str, str]] = {
    "missing": ("wajib diisi", "is required"),
    "extra_forbidden": ("tidak dikenal", "is not a known field"),
    "string_too_short": ("terlalu pendek", "is too short"),
    "string_too_long": ("terlalu panjang", "is too long"),
    "string_pattern_mismatch": ("formatnya salah", "has the wrong format"),
    "string_type": ("harus berupa teks", "must be text"),
    "too_short": ("terlalu sedikit isinya", "has too few items"),
    "too_long": ("terlalu banyak isinya", "has too many items"),
    "enum": ("bukan pilihan yang tersedia", "is not one of the choices"),
    "literal_error": ("bukan pilihan yang tersedia", "is not one of the choices"),
    "bool_parsing": ("harus true atau false", "must be true or false"),
    "bool_type": ("harus true atau false", "must be true or false"),
    "int_parsing": ("harus berupa angka", "must be a number"),
    "int_type": ("harus berupa angka", "must be a number"),
    "greater_than_equal": ("terlalu kecil", "is too small"),
    "less_than_equal": ("terlalu besar", "is too large"),
    "list_type": ("harus berupa daftar", "must be a list"),
    "dict_type": ("harus berupa objek", "must be an object"),
    "model_type": ("harus berupa objek JSON", "must be a JSON object"),
    "timezone_aware": ("harus memakai zona waktu", "must include a time zone"),
    "datetime_parsing": ("bukan waktu yang sah", "is not a valid time"),
    "datetime_from_date_parsing": ("bukan waktu yang sah", "is not a valid time"),
    "date_parsing": ("bukan tanggal yang sah", "is not a valid date"),
    "date_from_datetime_parsing": ("bukan tanggal yang sah", "is not a valid date"),
    "json_invalid": ("bukan JSON yang sah", "is not valid JSON"),
    "value_error": ("tidak sah", "is not valid"),
}


def _field(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "form")]
    return ".".join(parts) or "body"


def describe(error: dict[str, Any]) -> dict[str, str]:
    """One validation error as a field name and bilingual what-and-how."""
    name = _field(error.get("loc", ()))
    what_id, what_en = PROBLEMS.get(str(error.get("type")), ("tidak sah", "is not valid"))
    root = name.split(".")[0]
    how_id, how_en = FIELD_HINTS.get(root, ("periksa isinya.", "check its value."))
    if root == "scores" or name.startswith("U"):
        how_id, how_en = FIELD_HINTS["scores"]
    return {
        "field": name,
        "problem": str(error.get("msg", "")),
        "message_id": f"Kolom '{name}' {what_id}: {how_id}",
        "message_en": f"Field '{name}' {what_en}: {how_en}",
    }


def install(app: FastAPI) -> None:
    """Intake's own handlers for invalid input (more specific than the runtime's generic ones)."""

    @app.exception_handler(RequestValidationError)
    async def on_invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [describe(dict(e)) for e in exc.errors()]
        first = details[0] if details else describe({"type": "value_error", "loc": ()})
        return problem_response(
            422,
            "invalid_request",
            first["message_id"],
            first["message_en"],
            field=first["field"],
            details=details,
        )

    @app.exception_handler(InvalidRequest)
    async def on_domain_invalid(_: Request, exc: InvalidRequest) -> JSONResponse:
        return problem_response(
            exc.http_status, exc.code, exc.message_id, exc.message_en, field=exc.field
        )

    @app.exception_handler(RateLimited)
    async def on_rate_limited(_: Request, exc: RateLimited) -> JSONResponse:
        response = problem_response(429, exc.code, exc.message_id, exc.message_en)
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
