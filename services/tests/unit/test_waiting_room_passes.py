"""Tickets and passes (adapters/passes.py): standard HS256 JWTs any library reads, checked strictly
here (our exact header, our signature, the right type, user, sale and expiry), and never accepted
as a bearer token (adapters/tokens.py)."""

from __future__ import annotations

import base64
import time

import jwt
import pytest

from flashsale import errors
from flashsale.adapters.passes import PASS_LEEWAY_S, Passes
from flashsale.adapters.tokens import TokenVerifier
from flashsale.config import AuthSettings

AUTH = AuthSettings()
PASSES = Passes(AUTH)


def soon() -> int:
    return int(time.time()) + 60


def test_a_pass_is_a_standard_jwt_of_its_user_and_sale() -> None:
    token = PASSES.mint_pass(user_id="alice", sale_id="shoes", expires_at_s=soon())
    claims = jwt.decode(token, AUTH.jwt_secret, algorithms=["HS256"])
    assert (claims["typ"], claims["sub"], claims["sale"]) == ("pass", "alice", "shoes")
    assert PASSES.pass_valid(token, user_id="alice", sale_id="shoes")
    assert not PASSES.pass_valid(token, user_id="bob", sale_id="shoes")
    assert not PASSES.pass_valid(token, user_id="alice", sale_id="hats")
    assert not PASSES.pass_valid(None, user_id="alice", sale_id="shoes")
    assert not PASSES.pass_valid("", user_id="alice", sale_id="shoes")


def test_an_expired_pass_is_refused_past_a_second_of_leeway() -> None:
    now = int(time.time())
    within = PASSES.mint_pass(user_id="a", sale_id="s", expires_at_s=now)
    past = PASSES.mint_pass(user_id="a", sale_id="s", expires_at_s=now - PASS_LEEWAY_S - 1)
    assert PASSES.pass_valid(within, user_id="a", sale_id="s")
    assert not PASSES.pass_valid(past, user_id="a", sale_id="s")


@pytest.mark.parametrize(
    "forge",
    [
        lambda: jwt.encode({"typ": "pass", "sub": "a", "sale": "s", "exp": soon()}, "x" * 40),
        lambda: jwt.encode({"sub": "a", "sale": "s", "exp": soon()}, AUTH.jwt_secret),
        lambda: jwt.encode(
            {"typ": "ticket", "sub": "a", "sale": "s", "exp": soon()}, AUTH.jwt_secret
        ),
        lambda: jwt.encode(
            {"typ": "pass", "sub": "a", "sale": "s", "exp": "soon"}, AUTH.jwt_secret
        ),
        lambda: jwt.encode(
            {"typ": "pass", "sub": "a", "sale": "s", "exp": soon()},
            AUTH.jwt_secret * 2,  # 64 bytes: PyJWT warns below that for SHA-512
            algorithm="HS512",
        ),
        lambda: (
            base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
            + "."
            + PASSES.mint_pass(user_id="a", sale_id="s", expires_at_s=soon()).split(".")[1]
            + "."
        ),
        lambda: PASSES.mint_pass(user_id="a", sale_id="s", expires_at_s=soon())[:-3] + "xyz",
        lambda: "not.a.jwt",
        lambda: "é.é.é",
    ],
)
def test_forged_or_foreign_passes_are_refused(forge: object) -> None:
    assert callable(forge)
    assert not PASSES.pass_valid(forge(), user_id="a", sale_id="s")


def test_a_ticket_names_its_holder_for_its_sale_only() -> None:
    ticket = PASSES.mint_ticket(
        user_id="alice", sale_id="shoes", seq=7, joined_ms=1_795_000_000_000
    )
    assert ticket == PASSES.mint_ticket(
        user_id="alice", sale_id="shoes", seq=7, joined_ms=1_795_000_000_000
    )  # the same stored state, the same ticket
    held = PASSES.verify_ticket(ticket, sale_id="shoes")
    assert (held.user_id, held.seq) == ("alice", 7)
    with pytest.raises(errors.Unauthenticated):
        PASSES.verify_ticket(ticket, sale_id="hats")
    passed = PASSES.mint_pass(user_id="alice", sale_id="shoes", expires_at_s=soon())
    with pytest.raises(errors.Unauthenticated):
        PASSES.verify_ticket(passed, sale_id="shoes")
    old = PASSES.mint_ticket(user_id="alice", sale_id="shoes", seq=7, joined_ms=0)
    with pytest.raises(errors.Unauthenticated, match="expired"):
        PASSES.verify_ticket(old, sale_id="shoes")


def test_neither_is_a_bearer_token() -> None:
    verifier = TokenVerifier(AUTH)
    for token in (
        PASSES.mint_pass(user_id="alice", sale_id="shoes", expires_at_s=soon()),
        PASSES.mint_ticket(
            user_id="alice", sale_id="shoes", seq=1, joined_ms=int(time.time() * 1000)
        ),
    ):
        with pytest.raises(errors.Unauthenticated, match="not a bearer token"):
            verifier.verify(token)
