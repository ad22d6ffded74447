"""Waiting-room tokens: the ticket (who is queued for which sale) and the admission pass (who may
buy, until when), both HS256 JWTs signed with the auth secret, so any api or sse process checks
them in memory.

- ticket `{typ: "ticket", sub, sale, seq, exp}`: identifies a queued user to the SSE queue stream.
  Built only from stored state (user, sale, join number, join time), so the same user gets the same
  ticket back however often they join.
- pass `{typ: "pass", sub, sale, exp}`: sent by the purchase in the `Admission-Pass` header; `exp`
  is the first moment its holder was seen admitted plus the sale's session, so it never moves.
Bearer-token verification (adapters/tokens.py) refuses both: neither may stand in for a login."""

from __future__ import annotations

from dataclasses import dataclass

import jwt

from flashsale import errors
from flashsale.adapters.tokens import ALGORITHM, USER_ID_RE
from flashsale.config import AuthSettings

PASS = "pass"
TICKET = "ticket"
TYPES = (PASS, TICKET)
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
        self._secret = settings.jwt_secret

    def mint_pass(self, *, user_id: str, sale_id: str, expires_at_s: int) -> str:
        claims = {"typ": PASS, "sub": user_id, "sale": sale_id, "exp": expires_at_s}
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def pass_valid(self, token: str | None, *, user_id: str, sale_id: str) -> bool:
        """True only for an unexpired pass of this user for this sale, signed by us."""
        if not token:
            return False
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                leeway=PASS_LEEWAY_S,
                options={"require": ["exp", "sub", "sale", "typ"]},
            )
        except jwt.InvalidTokenError:
            return False
        return (
            claims.get("typ") == PASS
            and claims.get("sub") == user_id
            and claims.get("sale") == sale_id
        )

    def mint_ticket(self, *, user_id: str, sale_id: str, seq: int, joined_ms: int) -> str:
        claims = {
            "typ": TICKET,
            "sub": user_id,
            "sale": sale_id,
            "seq": seq,
            "exp": joined_ms // 1000 + TICKET_TTL_S,
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def verify_ticket(self, token: str, *, sale_id: str) -> TicketClaims:
        """The holder of a ticket for this sale; Unauthenticated otherwise."""
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                options={"require": ["exp", "sub", "sale", "typ", "seq"]},
            )
        except jwt.InvalidTokenError as e:
            raise errors.Unauthenticated(f"invalid ticket: {e}") from e
        sub, seq = claims.get("sub"), claims.get("seq")
        if claims.get("typ") != TICKET or claims.get("sale") != sale_id:
            raise errors.Unauthenticated("this is not a ticket of this sale's waiting room")
        if not isinstance(sub, str) or not USER_ID_RE.fullmatch(sub) or not isinstance(seq, int):
            raise errors.Unauthenticated("malformed ticket")
        return TicketClaims(user_id=sub, sale_id=sale_id, seq=seq)
