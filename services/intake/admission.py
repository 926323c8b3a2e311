"""Admission rules applied at registration (ADR 0120-0122): the online window, the
per-address challenge and cap, and the challenge a registration form fetches."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from functools import partial

from giliran.catalogue import SiteDef
from services.intake import antibot, sessions
from services.intake.base import IntakeBase
from services.intake.errors import AddressCapReached, ChallengeRequired
from services.intake.models import SubmitRequest


class Admission(IntakeBase):
    """Who may register online, when, and how often from one address."""

    async def _admit_address(
        self,
        site: SiteDef,
        session: sessions.SessionWindow,
        client: str,
        command: SubmitRequest,
        now: datetime,
    ) -> Callable[[], Awaitable[None]]:
        """Past `challenge_after` registrations for a session from one address, each further one
        carries a solved challenge (used once); past `per_address_per_session`, none is taken.
        Returns what takes this registration's count back: the caller runs it when the
        registration fails later (quota full, NIK already registered), since only places taken
        count, not attempts (a village office retrying for its residents is not capped by them)."""
        rule = site.antibot
        key = f"session-address:{session.session_id}:{antibot.address_key(client)}"
        expires = session.closes_at + timedelta(days=1)
        # Counted first, atomically: concurrent registrations from one address cannot all read
        # "below the threshold" and skip the challenge, nor pass the cap together.
        seen = await self.store.hit(key, "session", expires)
        given_back = partial(self.store.unhit, key, "session")
        if seen > rule.challenge_after and command.proof is None:
            # No proof: refused for that first. The cap is judged on proven registrations only,
            # as a flood's unproven attempts, counted for a moment, would otherwise push each
            # other over it (429 where the answer is "solve the challenge", 428).
            await given_back()
            raise ChallengeRequired(site.site)
        if seen > rule.per_address_per_session:
            # Refused, it holds no place: a later failure of an admitted one then frees its place.
            await given_back()
            raise AddressCapReached(rule.per_address_per_session)
        if seen <= rule.challenge_after:
            return given_back
        refusal: ChallengeRequired | None = None
        proof = command.proof
        if proof is None:
            refusal = ChallengeRequired(site.site)
        else:
            verdict = antibot.check_proof(
                self.nik_key, site.site, rule.challenge_bits, proof.challenge, proof.nonce, now
            )
            if not verdict.ok:
                refusal = ChallengeRequired(site.site, verdict.why_id, verdict.why_en)
            elif await self.store.hit(f"pow:{verdict.nonce_id}", "used", expires) > 1:
                refusal = ChallengeRequired(
                    site.site, "tantangan ini sudah dipakai.", "this challenge was already used."
                )
        if refusal is not None:
            # An unanswered challenge takes no place: it does not count towards the cap.
            await given_back()
            raise refusal
        return given_back

    def challenge(self, slug: str) -> tuple[str, int]:
        """A fresh proof-of-work challenge for a site's registration form, and its difficulty."""
        site = self.site(slug)
        bits = site.antibot.challenge_bits
        return antibot.new_challenge(self.nik_key, site.site, bits, self.clock()), bits
