"""Personal data at rest: the NIK encrypted with a key from settings, and the purge schedule."""

from __future__ import annotations

import base64
from datetime import date, timedelta

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

# Fields of a request that identify a person; the purge blanks all of them.
PERSONAL_FIELDS = ("name", "nik_encrypted", "nik_masked", "nik_hash", "phone", "email")


class NikCipher:
    """Fernet (AES-128-CBC + HMAC-SHA256, authenticated): a stolen database alone does not
    reveal NIKs, and a tampered value fails to decrypt instead of returning another NIK."""

    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    @classmethod
    def from_keys(cls, encryption_key: str | None, hash_key: bytes) -> NikCipher:
        """The configured Fernet key, or one derived from the NIK hash key (HKDF, its own
        label) so an installation that only set GILIRAN_NIK_HASH_KEY still encrypts; the two
        uses never share key material directly."""
        if encryption_key:
            return cls(encryption_key.encode())
        derived = HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=None,
            info=b"giliran intake nik encryption v1",
        ).derive(hash_key)
        return cls(base64.urlsafe_b64encode(derived))

    def encrypt(self, nik: str) -> str:
        return self._fernet.encrypt(nik.encode()).decode()

    def decrypt(self, token: str) -> str | None:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            return None


def purge_before(today: date, keep_days: int) -> date:
    """Sessions held before this local date have their personal data purged: a session's data
    is kept `keep_days` full days after it (complaints, corrections), then blanked."""
    return today - timedelta(days=keep_days)
