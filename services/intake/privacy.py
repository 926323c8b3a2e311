"""Personal data at rest: the NIK encrypted with a key from settings, and the purge schedule."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import date, timedelta

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

# Fields of a request that identify or reach a person; the purge blanks all of them. The status
# token too: the link in the citizen's messages then opens nothing (ADR 0115).
PERSONAL_FIELDS = ("name", "nik_encrypted", "nik_masked", "nik_hash", "phone", "email", "token")


# In GILIRAN_NIK_ENCRYPTION_KEY's list: the key derived from the NIK hash key (the default).
DERIVED = "derived"


class NikCipher:
    """Fernet (AES-128-CBC + HMAC-SHA256, authenticated): a stolen database alone does not
    reveal NIKs, and a tampered value fails to decrypt instead of returning another NIK.
    Several keys, newest first (MultiFernet): new NIKs are encrypted with the newest, stored
    ones decrypt with any of them until `giliran keys rotate-nik` re-encrypts them."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("NikCipher needs at least one key")
        self._newest = Fernet(keys[0])
        self._any = MultiFernet([Fernet(key) for key in keys])

    @classmethod
    def from_keys(cls, encryption_keys: str | None, hash_key: bytes) -> NikCipher:
        """The configured Fernet keys (comma-separated, newest first), or the one derived from
        the NIK hash key (HKDF, its own label) so an installation that only set
        GILIRAN_NIK_HASH_KEY still encrypts; the two uses never share key material directly.
        `derived` in the list stands for that key (moving from it to a key of its own)."""
        names = [part.strip() for part in (encryption_keys or "").split(",") if part.strip()]
        keys: list[bytes] = []
        for position, name in enumerate(names or [DERIVED], start=1):
            key = _derived(hash_key) if name == DERIVED else name.encode()
            try:
                Fernet(key)
            except ValueError as exc:
                # The position only: a key never goes to a log.
                raise ValueError(
                    f"GILIRAN_NIK_ENCRYPTION_KEY: kunci ke-{position} bukan kunci Fernet / "
                    f"key {position} is not a Fernet key"
                ) from exc
            keys.append(key)
        return cls(keys)

    def encrypt(self, nik: str) -> str:
        return self._newest.encrypt(nik.encode()).decode()

    def decrypt(self, token: str) -> str | None:
        try:
            return self._any.decrypt(token.encode()).decode()
        except InvalidToken:
            return None

    def is_current(self, token: str) -> bool:
        """Encrypted with the newest key already (nothing to re-encrypt)."""
        try:
            self._newest.decrypt(token.encode())
        except InvalidToken:
            return False
        return True

    def rotate(self, token: str) -> str | None:
        """The same NIK encrypted with the newest key; None when no configured key reads it."""
        try:
            return self._any.rotate(token.encode()).decode()
        except InvalidToken:
            return None


def own_key_problem(encryption_keys: str | None) -> str | None:
    """Why intake may not start with these NIK encryption keys (ADR 0113), or None: the newest
    key must be one of its own, so stealing the hash key (which every duplicate check uses)
    does not also open every stored NIK. `derived` stays readable behind it while
    `giliran keys rotate-nik` moves old NIKs off it."""
    names = [part.strip() for part in (encryption_keys or "").split(",") if part.strip()]
    move = (
        "Buat kunci Fernet baru, pasang sebagai 'KUNCI_BARU,derived', jalankan ulang intake, "
        "lalu `giliran keys rotate-nik` / Make a new Fernet key, set 'NEW_KEY,derived', restart "
        "intake, then run `giliran keys rotate-nik` (docs/security.md)."
    )
    if not names:
        return (
            "GILIRAN_NIK_ENCRYPTION_KEY belum diisi: NIK perlu kunci enkripsi sendiri, bukan "
            "turunan kunci hash / is not set: NIKs need an encryption key of their own, not "
            "one derived from the hash key. " + move
        )
    if names[0] == DERIVED:
        return (
            "GILIRAN_NIK_ENCRYPTION_KEY: kunci terbaru masih 'derived' / the newest key is still "
            "'derived' (one secret would protect both the hash and the NIKs). " + move
        )
    return None


def _derived(hash_key: bytes) -> bytes:
    derived = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=b"giliran intake nik encryption v1",
    ).derive(hash_key)
    return base64.urlsafe_b64encode(derived)


def purge_before(today: date, keep_days: int) -> date:
    """Sessions held before this local date have their personal data purged: a session's data
    is kept `keep_days` full days after it (complaints, corrections), then blanked."""
    return today - timedelta(days=keep_days)
