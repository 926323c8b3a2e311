"""Intake rules with no I/O: NIK checks and masking, phones, channels, priority, ticket status."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from datetime import date

import phonenumbers

from giliran.auth import Principal, Role
from giliran.contracts import Channel, PriorityReason, TicketStatus
from services.intake.errors import (
    ChannelForbidden,
    InvalidNik,
    InvalidPhone,
    InvalidRequest,
    SessionClosed,
    UnknownService,
    UnknownSite,
)

# Session rules moved to sessions.py; these names stay importable from here.
from services.intake.sessions import (
    SessionWindow,
    demo_session,
    scheduled_session,
    session_for_registration,
)

ELDERLY_AGE = 60  # lansia (UU 13/1998): called ahead without having to ask

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
    return InvalidNik(
        f"Kolom 'nik': NIK tidak valid: {message_id} Salin 16 digit NIK dari KTP-el atau KK.",
        f"Field 'nik': invalid NIK: {message_en} Copy the 16-digit NIK from the e-KTP or KK.",
    )


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


# --- who may use a channel --------------------------------------------------------------

# Who may register through a channel other than online: the channels that skip the NIK rule
# and join the line at once need a caller standing there (ADR 0102).
CHANNEL_ROLES: dict[Channel, tuple[frozenset[Role], str]] = {
    Channel.KIOSK: (frozenset({Role.KIOSK}), "kios/kiosk"),
    Channel.COUNTER: (
        frozenset({Role.OFFICER, Role.SUPERVISOR, Role.ADMIN}),
        "petugas/officer",
    ),
}


def check_channel(channel: Channel, site: str, who: Principal | None) -> None:
    """Online is open to anyone; the kiosk channel only to a kiosk principal of that site, the
    counter channel only to staff of that site."""
    rule = CHANNEL_ROLES.get(channel)
    if rule is None:
        return
    roles, name = rule
    if who is None or who.role not in roles or not who.at(site):
        raise ChannelForbidden(channel.value, site, name)


# --- priority -------------------------------------------------------------------------------


def priority_for(
    declared: PriorityReason | None, nik: NikCheck | None, today: date
) -> PriorityReason | None:
    """A declared reason wins; otherwise the elderly are recognised from the NIK's birth date."""
    if declared is not None:
        return declared
    if nik is not None and nik.age_on(today) >= ELDERLY_AGE:
        return PriorityReason.ELDERLY
    return None


# --- ticket status as the citizen sees it ----------------------------------------------------


def newer_status(current: TicketStatus | None, incoming: TicketStatus) -> bool:
    """Events may arrive out of order; a ticket's status only moves forward."""
    return current is None or incoming.rank >= current.rank


__all__ = [
    "InvalidNik",
    "InvalidPhone",
    "InvalidRequest",
    "NikCheck",
    "SessionClosed",
    "SessionWindow",
    "UnknownService",
    "UnknownSite",
    "check_channel",
    "check_nik",
    "demo_session",
    "mask_nik",
    "newer_status",
    "nik_hash",
    "normalize_phone",
    "priority_for",
    "scheduled_session",
    "session_for_registration",
]
