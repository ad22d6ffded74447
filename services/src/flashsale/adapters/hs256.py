"""HS256 JSON Web Tokens, signed and checked with hmac directly: the one implementation behind
bearer tokens (adapters/tokens.py) and waiting-room tickets and passes (adapters/passes.py).

A library decode costs ~40 µs (PyJWT re-examines the key on every call); this costs ~4 µs, and the
purchase path checks a token per request. Only HS256 exists here: a token whose header names any
other algorithm (`none` included) is refused before its signature is even looked at, and signatures
are compared in constant time. Claims are validated by the callers, which know what they need.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Any

import orjson

ALGORITHM = "HS256"


def b64encode(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def b64decode(data: bytes) -> bytes:
    return base64.urlsafe_b64decode(data + b"=" * (-len(data) % 4))


# The header PyJWT and most libraries write for HS256 (sorted keys, no spaces).
HEADER = b64encode(b'{"alg":"HS256","typ":"JWT"}')


class Signer:
    """Signs and checks tokens with one secret."""

    def __init__(self, secret: str) -> None:
        self._key = secret.encode()

    def signature(self, signing_input: bytes) -> bytes:
        return b64encode(hmac.new(self._key, signing_input, hashlib.sha256).digest())

    def encode(self, claims: dict[str, Any]) -> str:
        signing_input = HEADER + b"." + b64encode(orjson.dumps(claims))
        return (signing_input + b"." + self.signature(signing_input)).decode()

    def claims(self, token: str, *, exact_header: bool = False) -> dict[str, Any] | None:
        """The claims of a token this secret signed with HS256, else None (malformed, another
        algorithm, a bad signature). `exact_header` accepts only the header `encode` writes (our own
        tickets and passes); otherwise any JSON header whose `alg` is HS256 (tokens other libraries
        minted, e.g. k6's, whose key order may differ)."""
        parts = token.encode("ascii", "replace").split(b".")
        if len(parts) != 3:
            return None
        header, payload, signature = parts
        if header != HEADER and (exact_header or not _is_hs256(header)):
            return None
        if not hmac.compare_digest(self.signature(header + b"." + payload), signature):
            return None
        try:
            claims = orjson.loads(b64decode(payload))
        except (binascii.Error, ValueError):
            return None
        return claims if isinstance(claims, dict) else None


def _is_hs256(header: bytes) -> bool:
    try:
        doc = orjson.loads(b64decode(header))
    except (binascii.Error, ValueError):
        return False
    # `crit` names extensions we would have to understand; we understand none.
    return isinstance(doc, dict) and doc.get("alg") == ALGORITHM and "crit" not in doc
