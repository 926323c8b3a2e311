"""Intake's domain errors: a stable code, the field at fault and how to fix it, bilingual."""

from __future__ import annotations

from giliran.errors import Conflict, DomainError, NotFound


class InvalidRequest(DomainError):
    """A 422: `field` names the input at fault, so a form can point at it."""

    code = "invalid_request"
    http_status = 422
    field: str | None = None


class UnknownSite(InvalidRequest):
    code = "unknown_site"
    field = "site"

    def __init__(self, site: str) -> None:
        super().__init__(
            f"Kolom 'site': lokasi '{site}' tidak dikenal. Pilih lokasi dari daftar layanan.",
            f"Field 'site': unknown site '{site}'. Choose a site from the list of services.",
        )


class UnknownService(InvalidRequest):
    code = "unknown_service"
    field = "services"

    def __init__(self, site: str, codes: list[str]) -> None:
        listed = ", ".join(codes)
        super().__init__(
            f"Kolom 'services': layanan {listed} tidak tersedia di lokasi '{site}'. Pilih dari "
            f"/api/v1/sites/{site}/services.",
            f"Field 'services': service(s) {listed} not offered at site '{site}'. Choose from "
            f"/api/v1/sites/{site}/services.",
        )


class SessionClosed(InvalidRequest):
    code = "session_closed"
    field = "session_id"

    def __init__(self, site: str, msc: bool = True, next_id: str = "", next_en: str = "") -> None:
        rule_id = (
            " Layanan MSC buka setiap Minggu dan hari libur nasional pukul 09.00-11.00 WIB."
            if msc
            else ""
        )
        rule_en = " MSC opens every Sunday and public holiday, 09:00-11:00 WIB." if msc else ""
        super().__init__(
            f"Tidak ada sesi layanan yang buka hari ini di lokasi '{site}'.{rule_id}"
            + (f" Sesi berikutnya: {next_id}." if next_id else ""),
            f"No service session is open today at site '{site}'.{rule_en}"
            + (f" Next session: {next_en}." if next_en else ""),
        )


class SessionNotBookable(InvalidRequest):
    code = "session_not_bookable"
    field = "session_id"

    def __init__(self, session_id: str, why_id: str, why_en: str) -> None:
        super().__init__(
            f"Kolom 'session_id': sesi '{session_id}' tidak bisa dipesan: {why_id} Pilih sesi "
            "dari daftar sesi berikutnya.",
            f"Field 'session_id': session '{session_id}' cannot be booked: {why_en} Choose a "
            "session from the list of next sessions.",
        )


class InvalidSlot(InvalidRequest):
    code = "invalid_slot"
    field = "appointment_at"

    def __init__(self, slots: str) -> None:
        super().__init__(
            f"Kolom 'appointment_at': jam janji temu harus salah satu awal slot sesi ini: {slots}.",
            f"Field 'appointment_at': the appointment must start at one of this session's "
            f"slots: {slots}.",
        )


class InvalidNik(InvalidRequest):
    code = "invalid_nik"
    field = "nik"


class NikRequired(InvalidRequest):
    code = "nik_required"
    field = "nik"

    def __init__(self, codes: list[str]) -> None:
        listed = ", ".join(codes)
        super().__init__(
            f"Kolom 'nik': NIK wajib diisi untuk layanan {listed}. Isi 16 digit NIK dari KTP-el "
            "atau Kartu Keluarga.",
            f"Field 'nik': a NIK is required for {listed}. Enter the 16-digit NIK from the e-KTP "
            "or family card.",
        )


class InvalidPhone(InvalidRequest):
    code = "invalid_phone"
    field = "phone"

    def __init__(self) -> None:
        super().__init__(
            "Kolom 'phone': nomor HP tidak valid. Gunakan nomor seluler Indonesia, misalnya "
            "0812xxxxxxxx atau +62812xxxxxxxx.",
            "Field 'phone': invalid phone number. Use an Indonesian mobile number such as "
            "0812xxxxxxxx or +62812xxxxxxxx.",
        )


class QuotaExhausted(Conflict):
    """Every place of a service in the session is taken (409: retrying will not help)."""

    code = "quota_exhausted"

    def __init__(self, service: str) -> None:
        super().__init__(
            f"Kuota layanan {service} untuk sesi ini sudah habis. Silakan pilih sesi berikutnya.",
            f"The quota of {service} for this session is used up. Please choose the next session.",
        )


class SlotFull(Conflict):
    code = "slot_full"

    def __init__(self, at: str) -> None:
        super().__init__(
            f"Slot janji temu pukul {at} WIB sudah penuh. Pilih jam lain.",
            f"The {at} WIB appointment slot is full. Choose another time.",
        )


class RateLimited(DomainError):
    code = "rate_limited"
    http_status = 429

    def __init__(self, what_id: str, what_en: str, retry_after: int) -> None:
        super().__init__(
            f"Terlalu banyak pendaftaran dari {what_id}. Coba lagi dalam {retry_after} detik.",
            f"Too many registrations from {what_en}. Try again in {retry_after} seconds.",
        )
        self.retry_after = retry_after


class RequestNotFound(NotFound):
    code = "request_not_found"

    def __init__(self, request_id: str) -> None:
        super().__init__(
            f"Permohonan '{request_id}' tidak ditemukan.", f"Request '{request_id}' not found."
        )


class CheckInRefused(Conflict):
    code = "check_in_refused"

    def __init__(self, why_id: str, why_en: str) -> None:
        super().__init__(f"Check-in tidak bisa dilakukan: {why_id}", f"Cannot check in: {why_en}")


class UnknownCheckInCode(NotFound):
    code = "check_in_code_unknown"

    def __init__(self) -> None:
        super().__init__(
            "Kode check-in tidak ditemukan. Periksa 6 huruf/angka pada bukti pendaftaran atau "
            "pindai kode QR-nya.",
            "Check-in code not found. Check the 6 characters on the booking receipt or scan "
            "its QR code.",
        )


class FeedbackRefused(Conflict):
    code = "feedback_refused"

    def __init__(self, why_id: str, why_en: str) -> None:
        super().__init__(f"Survei tidak bisa dikirim: {why_id}", f"Survey not accepted: {why_en}")


class Forbidden(DomainError):
    code = "forbidden"
    http_status = 401

    def __init__(self) -> None:
        super().__init__(
            "Token admin salah atau tidak ada (header Authorization: Bearer <token>).",
            "Missing or wrong admin token (header Authorization: Bearer <token>).",
        )


class AdminInvalid(InvalidRequest):
    code = "admin_invalid"

    def __init__(self, message_id: str, message_en: str, field: str | None = None) -> None:
        super().__init__(message_id, message_en)
        self.field = field
