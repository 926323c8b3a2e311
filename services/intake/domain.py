"""Intake rules with no I/O: NIK checks and masking, phones, session windows, ticket status."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import phonenumbers

from giliran.catalogue import SiteDef
from giliran.contracts import TicketStatus
from giliran.errors import DomainError

# --- errors ----------------------------------------------------------------------------------


class InvalidRequest(DomainError):
    code = "invalid_request"
    http_status = 422


class UnknownSite(InvalidRequest):
    code = "unknown_site"

    def __init__(self, site: str) -> None:
        super().__init__(f"Lokasi '{site}' tidak dikenal.", f"Unknown site '{site}'.")


class UnknownService(InvalidRequest):
    code = "unknown_service"

    def __init__(self, site: str, codes: list[str]) -> None:
        listed = ", ".join(codes)
        super().__init__(
            f"Layanan {listed} tidak tersedia di lokasi '{site}'.",
            f"Service(s) {listed} not offered at site '{site}'.",
        )


class SessionClosed(InvalidRequest):
    code = "session_closed"

    def __init__(self, site: str) -> None:
        super().__init__(
            f"Tidak ada sesi layanan yang buka hari ini di lokasi '{site}'. Layanan MSC buka "
            "setiap Minggu dan hari libur nasional pukul 09.00-11.00 WIB.",
            f"No service session is open today at site '{site}'. MSC opens every Sunday and "
            "public holiday, 09:00-11:00 WIB.",
        )


class InvalidNik(InvalidRequest):
    code = "invalid_nik"


class InvalidPhone(InvalidRequest):
    code = "invalid_phone"

    def __init__(self) -> None:
        super().__init__(
            "Nomor HP tidak valid. Gunakan nomor seluler Indonesia, misalnya 0812xxxxxxxx atau "
            "+62812xxxxxxxx.",
            "Invalid phone number. Use an Indonesian mobile number such as 0812xxxxxxxx or "
            "+62812xxxxxxxx.",
        )


# --- NIK -------------------------------------------------------------------------------------

# Kabupaten Bekasi (32.16) has 23 kecamatan; a higher code there is unknown, not impossible.
_KNOWN_KECAMATAN_COUNT = {"3216": 23}


@dataclass(frozen=True)
class NikCheck:
    """A NIK that passed the rejection rules, with what we could read from it."""

    nik: str = field(repr=False)
    birth_date: date
    female: bool
    warnings: tuple[str, ...] = ()

    @property
    def masked(self) -> str:
        return mask_nik(self.nik)

    def age_on(self, day: date) -> int:
        years = day.year - self.birth_date.year
        return years - ((day.month, day.day) < (self.birth_date.month, self.birth_date.day))


def _reject(message_id: str, message_en: str) -> InvalidNik:
    return InvalidNik(f"NIK tidak valid: {message_id}", f"Invalid NIK: {message_en}")


def _birth_date(day: int, month: int, yy: int, today: date) -> date | None:
    """The most recent plausible birth date: NIK years have no century."""
    for century in (2000, 1900):
        try:
            candidate = date(century + yy, month, day)
        except ValueError:
            continue
        if candidate <= today:
            return candidate
    return None


def check_nik(raw: str, today: date) -> NikCheck:
    """Reject what cannot be a NIK; warn about what is odd but real (NIKs are never reissued, so a
    birth date that disagrees or a region code that no longer exists must still be accepted)."""
    nik = raw.replace(" ", "").replace(".", "")
    if len(nik) != 16:
        raise _reject(
            f"harus 16 digit (diterima {len(nik)}).", f"must be 16 digits (got {len(nik)})."
        )
    if not nik.isascii() or not nik.isdigit():
        raise _reject("hanya boleh berisi angka.", "digits only.")
    province, regency, district = int(nik[0:2]), int(nik[2:4]), int(nik[4:6])
    if not 11 <= province <= 96 or regency == 0 or district == 0:
        raise _reject("kode wilayah tidak mungkin.", "impossible region code.")
    day, month, yy = int(nik[6:8]), int(nik[8:10]), int(nik[10:12])
    female = day > 40
    if female:
        day -= 40
    if not 1 <= month <= 12 or not 1 <= day <= 31:
        raise _reject("tanggal lahir tidak mungkin.", "impossible birth date.")
    birth = _birth_date(day, month, yy, today)
    if birth is None:
        raise _reject("tanggal lahir tidak mungkin.", "impossible birth date.")
    if nik[12:16] == "0000":
        raise _reject("nomor urut 0000 tidak mungkin.", "serial 0000 is impossible.")
    warnings: list[str] = []
    known = _KNOWN_KECAMATAN_COUNT.get(nik[0:4])
    if known is not None and district > known:
        warnings.append("unknown_region")
    if not 1 <= regency <= 69 and not 71 <= regency <= 99:
        warnings.append("unknown_region")
    return NikCheck(nik=nik, birth_date=birth, female=female, warnings=tuple(sorted(set(warnings))))


def mask_nik(nik: str) -> str:
    """The one NIK mask used everywhere (tickets, boards, messages, logs): last four digits only."""
    return "*" * 12 + nik[-4:]


def nik_hash(nik: str, key: bytes) -> str:
    """Keyed hash (HMAC-SHA256): recognises a returning citizen without storing their NIK on the
    bus; without the key it cannot be reversed by trying all NIKs."""
    return hmac.new(key, nik.encode(), hashlib.sha256).hexdigest()


# --- phone -----------------------------------------------------------------------------------


def normalize_phone(raw: str) -> str:
    """An Indonesian mobile number in E.164 (+628...), the only form stored."""
    try:
        number = phonenumbers.parse(raw, "ID")
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhone() from exc
    # Messages go out through Indonesian SMS/WhatsApp gateways: an Indonesian mobile number only.
    if (
        number.country_code != 62
        or not phonenumbers.is_valid_number(number)
        or phonenumbers.number_type(number) != phonenumbers.PhoneNumberType.MOBILE
    ):
        raise InvalidPhone()
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


# --- sessions --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionWindow:
    """One service session at a site: when it opens and closes (UTC inside)."""

    session_id: str
    site: str
    local_date: date
    opens_at: datetime
    closes_at: datetime
    kind: str = "scheduled"

    def accepts_registration(self, now: datetime) -> bool:
        """Registration runs from the day's start until the session closes."""
        return now < self.closes_at


def scheduled_session(site: SiteDef, day: date, holidays: Collection[date]) -> SessionWindow | None:
    """The session a site's rule gives on a local date, if any (MSC: Sundays and holidays)."""
    rule = site.schedule
    if day in rule.closed_dates:
        return None
    if rule.rule == "sundays_and_holidays":
        open_day = day.weekday() == 6 or day in holidays or day in rule.extra_dates
    else:
        open_day = day in rule.extra_dates
    if not open_day:
        return None
    zone = ZoneInfo(site.timezone)
    opens = datetime.combine(day, rule.opens, zone).astimezone(UTC)
    closes = datetime.combine(day, rule.closes, zone).astimezone(UTC)
    return SessionWindow(f"{site.site}-{day:%Y%m%d}", site.site, day, opens, closes)


def demo_session(site: SiteDef, now: datetime, hours: int = 12) -> SessionWindow:
    """`giliran up --demo`: an ad-hoc session open from now, so the flow can be tried any hour."""
    day = now.astimezone(ZoneInfo(site.timezone)).date()
    return SessionWindow(
        f"{site.site}-demo-{day:%Y%m%d}", site.site, day, now, now + timedelta(hours=hours), "adhoc"
    )


def session_for_registration(
    site: SiteDef,
    now: datetime,
    holidays: Collection[date],
    adhoc: list[SessionWindow],
) -> SessionWindow:
    """Which session a request made now joins: an open ad-hoc one, else today's scheduled one."""
    today = now.astimezone(ZoneInfo(site.timezone)).date()
    if today not in site.schedule.closed_dates:
        for window in adhoc:
            if window.site == site.site and window.opens_at <= now < window.closes_at:
                return window
    scheduled = scheduled_session(site, today, holidays)
    if scheduled is None or not scheduled.accepts_registration(now):
        raise SessionClosed(site.site)
    return scheduled


# --- ticket status as the citizen sees it ----------------------------------------------------


def newer_status(current: TicketStatus | None, incoming: TicketStatus) -> bool:
    """Events may arrive out of order; a ticket's status only moves forward."""
    return current is None or incoming.rank >= current.rank
