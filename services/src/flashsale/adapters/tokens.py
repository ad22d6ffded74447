"""Bearer tokens: HS256 JWTs with `sub` (user id), `exp` and an optional `role`.

The algorithm is pinned to HS256 (adapters/hs256.py): `none` and every other algorithm are refused,
and so is a token with a `typ` claim (the waiting room's tickets and passes, adapters/passes.py, are
signed with the same secret but are not logins). `exp` and `sub` are required; `exp`, `nbf` and
`iat` are checked with the configured leeway, as a JWT library would. Verified tokens are cached by
their exact text until they expire, so a client that reuses its token (every real one does) costs
one dict lookup; a new token costs ~4 µs."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from flashsale import errors
from flashsale.adapters.hs256 import ALGORITHM, Signer
from flashsale.config import AuthSettings

__all__ = ["ALGORITHM", "ADMIN_ROLE", "USER_ID_RE", "Principal", "TokenVerifier", "mint"]

ADMIN_ROLE = "admin"
USER_ID_RE = re.compile(r"^[A-Za-z0-9._@-]{1,128}$")
# 100k entries ≈ 30 MB at most: one per distinct live token, the crowd of a large sale.
CACHE_MAX = 100_000


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str
    is_admin: bool
    expires_at: float


class TokenVerifier:
    def __init__(self, settings: AuthSettings) -> None:
        self._signer = Signer(settings.jwt_secret)
        self._leeway = settings.leeway_s
        self._cache: dict[str, Principal] = {}

    def verify(self, token: str) -> Principal:
        now = time.time()
        cached = self._cache.get(token)
        if cached is not None:
            if cached.expires_at + self._leeway > now:
                return cached
            del self._cache[token]
        principal = self._decode(token)
        if len(self._cache) >= CACHE_MAX:
            self._cache.clear()  # simpler than LRU and just as good: live tokens come back at once
        self._cache[token] = principal
        return principal

    def _decode(self, token: str) -> Principal:
        claims = self._signer.claims(token)
        if claims is None:
            raise errors.Unauthenticated("invalid bearer token: not an HS256 JWT signed by us")
        if "typ" in claims:
            raise errors.Unauthenticated("a waiting-room ticket or pass is not a bearer token")
        now = time.time()
        exp, nbf, iat = claims.get("exp"), claims.get("nbf"), claims.get("iat")
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            raise errors.Unauthenticated("invalid bearer token: exp is required and numeric")
        if exp <= now - self._leeway:
            raise errors.Unauthenticated("invalid bearer token: the token has expired")
        for name, value in (("nbf", nbf), ("iat", iat)):
            if value is not None and not _is_time(value):
                raise errors.Unauthenticated(f"invalid bearer token: {name} must be numeric")
            if value is not None and value > now + self._leeway:
                raise errors.Unauthenticated(f"invalid bearer token: not valid yet ({name})")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not USER_ID_RE.fullmatch(sub):
            raise errors.Unauthenticated(
                "the token's sub must be a user id (1-128 of A-Za-z0-9._@-)"
            )
        return Principal(
            user_id=sub,
            is_admin=claims.get("role") == ADMIN_ROLE,
            expires_at=float(exp),
        )


def _is_time(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def mint(
    settings: AuthSettings, *, user_id: str, admin: bool = False, ttl_s: int | None = None
) -> str:
    if not USER_ID_RE.fullmatch(user_id):
        raise ValueError("user id must be 1-128 characters of A-Za-z0-9._@-")
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": user_id,
        "iat": now,
        "exp": now + (ttl_s if ttl_s is not None else settings.token_ttl_s),
    }
    if admin:
        claims["role"] = ADMIN_ROLE
    return Signer(settings.jwt_secret).encode(claims)
