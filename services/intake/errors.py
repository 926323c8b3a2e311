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


class TooManyServices(InvalidRequest):
    code = "too_many_services"
    field = "services"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"Kolom 'services': pilih paling banyak {limit} layanan dalam satu pendaftaran. "
            "Layanan lain dapat didaftarkan terpisah.",
            f"Field 'services': choose at most {limit} services in one registration. Register "
            "for other services separately.",
        )


class ChannelForbidden(DomainError):
    """Only a device standing there may register as the kiosk (or an officer at the counter):
    those channels skip the NIK rule and join the line at once."""

    code = "channel_forbidden"
    http_status = 403
    field = "channel"

    def __init__(self, channel: str, site: str, role: str) -> None:
        super().__init__(
            f"Kolom 'channel': pendaftaran lewat '{channel}' hanya untuk perangkat {role} yang "
            f"masuk untuk lokasi '{site}'. Daftar online tanpa kolom 'channel'.",
            f"Field 'channel': registering through '{channel}' is only for a signed-in {role} "
            f"device of site '{site}'. Register online without the 'channel' field.",
        )


class AlreadyRegistered(Conflict):
    """A NIK that already holds one of these services in the session. Says nothing of the
    request that holds it: NIKs are not secret, the status link is."""

    code = "already_registered"

    def __init__(self) -> None:
        super().__init__(
            "NIK ini sudah terdaftar untuk layanan yang dipilih pada sesi ini. Tautan status "
            "hanya dikirim ke nomor HP/e-mail yang didaftarkan: minta kirim ulang di "
            "/kirim-ulang, atau datang ke petugas dengan KTP-el.",
            "This NIK is already registered for a chosen service in this session. The status "
            "link is only sent to the phone/e-mail registered with it: ask for it again at "
            "/kirim-ulang, or see an officer with your e-KTP.",
        )


class ContactRequired(InvalidRequest):
    code = "contact_required"
    field = "phone"

    def __init__(self) -> None:
        super().__init__(
            "Kolom 'phone': isi nomor HP atau e-mail yang Anda daftarkan.",
            "Field 'phone': enter the phone number or e-mail you registered with.",
        )


class InvalidNik(InvalidRequest):
    code = "invalid_nik"
    field = "nik"


class NikRequired(InvalidRequest):
    code = "nik_required"
    field = "nik"

    def __init__(self, codes: list[str], kiosk: bool = False) -> None:
        listed = ", ".join(codes)
        how_id = (
            "Ketik 16 digit NIK dari KTP-el atau Kartu Keluarga dengan tombol angka, lalu sentuh "
            "layanannya lagi."
            if kiosk
            else "Isi 16 digit NIK dari KTP-el atau Kartu Keluarga."
        )
        how_en = (
            "Type the 16-digit NIK from the e-KTP or family card on the keypad, then touch the "
            "service again."
            if kiosk
            else "Enter the 16-digit NIK from the e-KTP or family card."
        )
        super().__init__(
            f"Kolom 'nik': NIK wajib diisi untuk layanan {listed}. {how_id}",
            f"Field 'nik': a NIK is required for {listed}. {how_en}",
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

    def __init__(
        self,
        what_id: str,
        what_en: str,
        retry_after: int,
        doing: tuple[str, str] = ("pendaftaran", "registrations"),
    ) -> None:
        super().__init__(
            f"Terlalu banyak {doing[0]} dari {what_id}. Coba lagi dalam {retry_after} detik.",
            f"Too many {doing[1]} from {what_en}. Try again in {retry_after} seconds.",
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
    """The one answer for a code that is unknown, of another site, cancelled, or outside its
    session's check-in window: which of these it is would tell a guesser the code exists."""

    code = "check_in_code_unknown"

    def __init__(self, early_minutes: int = 60) -> None:
        super().__init__(
            "Kode check-in tidak berlaku saat ini. Periksa 6 huruf/angka dan tanggal sesi pada "
            f"bukti pendaftaran: check-in dibuka {early_minutes} menit sebelum sesi dimulai "
            "sampai sesi selesai. Atau pindai kode QR-nya.",
            "Check-in code not valid now. Check the 6 characters and the session date on the "
            f"booking receipt: check-in opens {early_minutes} minutes before the session starts "
            "until it ends. Or scan its QR code.",
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


class RegistrationNotOpen(Conflict):
    """Online registration for the session has not opened yet, or has closed (409)."""

    code = "registration_not_open"

    def __init__(self, when_id: str, when_en: str, closed: bool) -> None:
        if closed:
            super().__init__(
                f"Pendaftaran daring untuk sesi ini sudah ditutup ({when_id}). Silakan datang "
                "langsung dan ambil nomor di kios, atau daftar untuk sesi berikutnya.",
                f"Online registration for this session has closed ({when_en}). Please come in "
                "person and take a number at the kiosk, or register for the next session.",
            )
        else:
            super().__init__(
                f"Pendaftaran daring untuk sesi ini dibuka {when_id}.",
                f"Online registration for this session opens {when_en}.",
            )


class ChallengeRequired(DomainError):
    """An address registered several times for this session: the next needs a proof of work."""

    code = "challenge_required"
    http_status = 428

    def __init__(self, site: str, why_id: str = "", why_en: str = "") -> None:
        super().__init__(
            "Sudah beberapa pendaftaran dari alamat internet ini untuk sesi ini. Muat ulang "
            "formulir (tantangan dijawab otomatis oleh peramban), atau ambil tantangan di "
            f"/api/v1/sites/{site}/challenge dan kirim jawabannya di kolom 'proof'."
            + (f" {why_id}" if why_id else ""),
            "Several registrations came from this internet address for this session. Reload "
            "the form (the browser answers the challenge itself), or fetch a challenge from "
            f"/api/v1/sites/{site}/challenge and send its answer in the field 'proof'."
            + (f" {why_en}" if why_en else ""),
        )


class AddressCapReached(DomainError):
    """One address has taken as many places in a session as one address may."""

    code = "address_cap_reached"
    http_status = 429

    def __init__(self, cap: int) -> None:
        super().__init__(
            f"Alamat internet ini sudah mendaftarkan {cap} permohonan untuk sesi ini, batas "
            "satu alamat. Silakan datang langsung dan ambil nomor di kios.",
            f"This internet address has already registered {cap} requests for this session, "
            "the most one address may. Please come in person and take a number at the kiosk.",
        )
