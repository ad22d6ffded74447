"""Accounts for people trying the system by hand: ids and password hashes (scrypt, stdlib only)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from flashsale.domain.ids import uuid7

# scrypt cost: n=2^14, r=8, p=1 is the interactive-login setting of the scrypt paper (~16 MB, ~50
# ms).
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
SALT_BYTES = 16


def new_user_id() -> str:
    return f"u-{uuid7().hex}"


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else os.urandom(SALT_BYTES)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p)
        )
    except (ValueError, TypeError):
        # A stored hash we cannot use (corrupt, or cost parameters scrypt refuses: hashlib raises
        # TypeError for a negative or oversized n, r or p) never matches.
        return False
    return hmac.compare_digest(actual, expected)
