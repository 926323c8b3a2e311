"""Anti-bot rules with no I/O: the address a cap counts, and the proof-of-work challenge a
registration form must answer once an address has registered a few times (ADR 0122)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from giliran.hardening import address_key

# A challenge is answered within minutes, or a fresh one is fetched.
CHALLENGE_TTL = timedelta(minutes=10)

__all__ = ["address_key"]  # re-exported: the caps count addresses as every limit does


def _sign(key: bytes, body: str) -> str:
    return hmac.new(key, f"pow|{body}".encode(), hashlib.sha256).hexdigest()[:32]


def new_challenge(key: bytes, site: str, bits: int, now: datetime) -> str:
    """`<site>.<bits>.<expiry>.<random>.<signature>`: stateless, so any intake instance checks
    it; the random part is remembered once used, so one answer buys one registration."""
    expires = int((now + CHALLENGE_TTL).timestamp())
    body = f"{site}.{bits}.{expires}.{secrets.token_hex(8)}"
    return f"{body}.{_sign(key, body)}"


def leading_zero_bits(digest: bytes) -> int:
    bits = 0
    for byte in digest:
        if byte == 0:
            bits += 8
            continue
        return bits + 8 - byte.bit_length()
    return bits


@dataclass(frozen=True)
class Verdict:
    ok: bool
    # The challenge's random part (for the used-once check) when ok.
    nonce_id: str = ""
    why_id: str = ""
    why_en: str = ""


def check_proof(
    key: bytes, site: str, bits: int, challenge: str, nonce: str, now: datetime
) -> Verdict:
    """Whether SHA-256(`challenge:nonce`) starts with `bits` zero bits, for a challenge this
    site issued, at this difficulty or more, that has not expired."""
    parts = challenge.split(".")
    if len(parts) != 5:
        return Verdict(False, why_id="tantangan tidak dikenal.", why_en="unknown challenge.")
    body, signature = ".".join(parts[:4]), parts[4]
    if not hmac.compare_digest(_sign(key, body), signature) or parts[0] != site:
        return Verdict(False, why_id="tantangan tidak dikenal.", why_en="unknown challenge.")
    if not parts[1].isdigit() or int(parts[1]) < bits:
        return Verdict(False, why_id="tantangan terlalu mudah.", why_en="challenge too easy.")
    if not parts[2].isdigit() or int(parts[2]) < now.timestamp():
        return Verdict(False, why_id="tantangan kedaluwarsa.", why_en="challenge expired.")
    digest = hashlib.sha256(f"{challenge}:{nonce}".encode()).digest()
    if leading_zero_bits(digest) < int(parts[1]):
        return Verdict(False, why_id="jawaban tantangan salah.", why_en="wrong answer.")
    return Verdict(True, nonce_id=parts[3])


def solve(challenge: str, limit: int = 1 << 28) -> str:
    """An answer (what the page's script does in the browser; tests and API clients use it)."""
    bits = int(challenge.split(".")[1])
    for n in range(limit):
        digest = hashlib.sha256(f"{challenge}:{n}".encode()).digest()
        if leading_zero_bits(digest) >= bits:
            return str(n)
    raise ValueError("no answer found")
