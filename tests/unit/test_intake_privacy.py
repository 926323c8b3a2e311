"""NIKs at rest: encrypted and authenticated, a derived key of its own, the purge date."""

from __future__ import annotations

import base64
from datetime import date

from cryptography.fernet import Fernet

from services.intake.domain import mask_nik, nik_hash
from services.intake.privacy import NikCipher, purge_before

NIK = "3216094512900001"


def test_the_nik_round_trips_and_never_appears_in_the_token() -> None:
    cipher = NikCipher.from_keys(None, b"hash-key")
    token = cipher.encrypt(NIK)
    assert NIK not in token and NIK not in base64.urlsafe_b64decode(token).decode("latin-1")
    assert cipher.decrypt(token) == NIK
    assert cipher.encrypt(NIK) != token  # a fresh IV each time: equal NIKs do not look equal


def test_the_derived_key_is_not_the_hash_key_and_other_keys_cannot_read() -> None:
    derived = NikCipher.from_keys(None, b"hash-key")
    token = derived.encrypt(NIK)
    assert NikCipher.from_keys(None, b"another-key").decrypt(token) is None
    assert NikCipher.from_keys(Fernet.generate_key().decode(), b"hash-key").decrypt(token) is None
    tampered = token[:-6] + ("A" if token[-6] != "A" else "B") + token[-5:]
    assert derived.decrypt(tampered) is None  # authenticated: a changed byte is refused
    # The keyed hash and the mask are the only forms that leave intake.
    assert nik_hash(NIK, b"hash-key") != nik_hash(NIK, b"another-key")
    assert mask_nik(NIK) == "************0001"


def test_purge_keeps_the_retention_days_in_full() -> None:
    assert purge_before(date(2026, 12, 30), 30) == date(2026, 11, 30)
    assert purge_before(date(2026, 12, 30), 0) == date(2026, 12, 30)
