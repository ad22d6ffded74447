"""Waiting-room tokens: the ticket (who is queued for which sale) and the admission pass (who may
buy, until when), both HS256 JWTs signed with the auth secret, so any api or sse process checks
them in memory.

- ticket `{typ: "ticket", sub, sale, seq, exp}`: identifies a queued user to the SSE queue stream.
  Built only from stored state (user, sale, join number, join time), so the same user gets the same
  ticket back however often they join.
- pass `{typ: "pass", sub, sale, exp}`: sent by the purchase in the `Admission-Pass` header; `exp`
  is the first moment its holder was seen admitted plus the sale's session, so it never moves.
Bearer-token verification (adapters/tokens.py) refuses both: neither may stand in for a login.

They are minted and checked with hmac directly (adapters/hs256.py, ~3 µs instead of a library's
~40 µs: every join and every purchase of a sale with a waiting room pays it). The tokens are
standard JWTs (any JWT library verifies them); checking is stricter than for bearer tokens: the
header must be exactly the one we write, so the algorithm is pinned to HS256 by construction."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from flashsale import errors
from flashsale.adapters.hs256 import Signer
from flashsale.adapters.tokens import USER_ID_RE
from flashsale.config import AuthSettings

PASS = "pass"
TICKET = "ticket"
# 1 s: the pass is minted from Redis TIME and checked against this host's clock; NTP keeps them
# within milliseconds, and a 10 s session must not silently grow by the bearer tokens' 30 s.
PASS_LEEWAY_S = 1
# 30 days: a ticket only names its holder (the stream re-reads the live ticket at connect), and a
# pre-queue may be joined long before a sale opens; it dies with the sale's keys anyway.
TICKET_TTL_S = 30 * 24 * 3600


@dataclass(frozen=True, slots=True)
class TicketClaims:
    user_id: str
    sale_id: str
    seq: int


class Passes:
    """Mints and checks tickets and passes with the process's auth secret."""

    def __init__(self, settings: AuthSettings) -> None:
        self._signer = Signer(settings.jwt_secret)

    def _encode(self, claims: dict[str, Any]) -> str:
        return self._signer.encode(claims)

    def _claims(self, token: str) -> dict[str, Any] | None:
        """The claims of a token we signed, else None (any other header, signature or shape)."""
        return self._signer.claims(token, exact_header=True)

    # --- passes and tickets -----------------------------------------------------------------------

    def mint_pass(self, *, user_id: str, sale_id: str, expires_at_s: int) -> str:
        return self._encode({"typ": PASS, "sub": user_id, "sale": sale_id, "exp": expires_at_s})

    def pass_valid(self, token: str | None, *, user_id: str, sale_id: str) -> bool:
        """True only for an unexpired pass of this user for this sale, signed by us."""
        claims = self._claims(token) if token else None
        if claims is None:
            return False
        exp = claims.get("exp")
        return (
            claims.get("typ") == PASS
            and claims.get("sub") == user_id
            and claims.get("sale") == sale_id
            and type(exp) is int
            and exp + PASS_LEEWAY_S > time.time()
        )

    def mint_ticket(self, *, user_id: str, sale_id: str, seq: int, joined_ms: int) -> str:
        return self._encode(
            {
                "typ": TICKET,
                "sub": user_id,
                "sale": sale_id,
                "seq": seq,
                "exp": joined_ms // 1000 + TICKET_TTL_S,
            }
        )

    def verify_ticket(self, token: str, *, sale_id: str) -> TicketClaims:
        """The holder of a ticket for this sale; Unauthenticated otherwise."""
        claims = self._claims(token)
        if claims is None:
            raise errors.Unauthenticated("invalid ticket")
        sub, seq, exp = claims.get("sub"), claims.get("seq"), claims.get("exp")
        if claims.get("typ") != TICKET or claims.get("sale") != sale_id:
            raise errors.Unauthenticated("this is not a ticket of this sale's waiting room")
        if not isinstance(sub, str) or not USER_ID_RE.fullmatch(sub) or type(seq) is not int:
            raise errors.Unauthenticated("malformed ticket")
        if type(exp) is not int or exp <= time.time():
            raise errors.Unauthenticated("the ticket has expired")
        return TicketClaims(user_id=sub, sale_id=sale_id, seq=seq)
