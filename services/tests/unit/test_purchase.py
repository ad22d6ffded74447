"""The purchase rules that need no store (domain/purchase.py): Idempotency-Key syntax, request
fingerprints ("the same request after defaults"), and the domain error each refusal code of the
reserve script becomes. Pure: no I/O."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flashsale import errors
from flashsale.domain import purchase
from flashsale.domain.purchase import ReserveCode

VISIBLE_ASCII = "".join(chr(c) for c in range(0x21, 0x7F))
OPENS = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


# --- Idempotency-Key ------------------------------------------------------------------------------


def test_missing_key_is_required_not_invalid() -> None:
    with pytest.raises(errors.IdempotencyKeyRequired) as caught:
        purchase.validate_idempotency_key(None)
    assert caught.value.code == "idempotency_key_required"


@pytest.mark.parametrize(
    "key",
    [
        "a",
        "x" * 255,
        VISIBLE_ASCII,
        "order-1:retry/2",
        "550e8400-e29b-41d4-a716-446655440000",
        "~!",
    ],
)
def test_one_to_255_visible_ascii_characters_are_valid(key: str) -> None:
    assert purchase.validate_idempotency_key(key) == key


@pytest.mark.parametrize(
    "key",
    [
        "",  # empty
        "x" * 256,  # one too long
        "x" * 10_000,
        " ",  # space is not visible
        "a b",
        " key",
        "key ",
        "key\t",
        "key\n",
        "\x00",
        "\x7f",  # DEL
        "clé",  # non-ASCII letter
        "key\u00a0",  # no-break space
        "🔑",
        "ｋｅｙ",  # full-width letters look ASCII but are not
    ],
)
def test_empty_overlong_or_non_visible_ascii_keys_are_invalid(key: str) -> None:
    with pytest.raises(errors.InvalidIdempotencyKey) as caught:
        purchase.validate_idempotency_key(key)
    assert caught.value.code == "invalid_idempotency_key"


@given(st.text(alphabet=VISIBLE_ASCII, min_size=1, max_size=255))
def test_every_visible_ascii_key_up_to_255_is_accepted(key: str) -> None:
    assert purchase.validate_idempotency_key(key) == key


@given(
    st.text(min_size=1, max_size=300).filter(
        lambda s: len(s) > 255 or any(not 0x21 <= ord(c) <= 0x7E for c in s)
    )
)
def test_any_key_with_a_bad_character_or_over_255_is_refused(key: str) -> None:
    with pytest.raises(errors.InvalidIdempotencyKey):
        purchase.validate_idempotency_key(key)


# --- fingerprints ---------------------------------------------------------------------------------


def test_defaults_make_equal_fingerprints() -> None:
    # `{}`, an empty body and `{"quantity": 1}` all reach fingerprint() as quantity 1 (the API's
    # parser applies the default); they are one request.
    assert purchase.fingerprint(sale_id="s-1", quantity=1) == purchase.fingerprint(
        sale_id="s-1", quantity=1
    )


def test_a_different_quantity_is_a_different_request() -> None:
    one = purchase.fingerprint(sale_id="s-1", quantity=1)
    assert purchase.fingerprint(sale_id="s-1", quantity=2) != one


def test_a_different_sale_is_a_different_request() -> None:
    assert purchase.fingerprint(sale_id="s-1", quantity=1) != purchase.fingerprint(
        sale_id="s-2", quantity=1
    )


def test_fingerprint_is_a_short_lowercase_hex_digest_without_the_separator() -> None:
    value = purchase.fingerprint(sale_id="s-1", quantity=3)
    assert len(value) == 32
    assert set(value) <= set("0123456789abcdef")
    # The stored answer is "fingerprint\nbody": a fingerprint must never contain the separator.
    assert "\n" not in value


def test_fingerprint_is_stable_across_processes() -> None:
    # A fixed value: a restart (or another API process) must compute the same fingerprint, or
    # every replay after a deploy would be refused as key reuse.
    assert purchase.fingerprint(sale_id="s-1", quantity=1) == "558409f372537fed648e2853848c87c5"


sale_ids = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
quantities = st.integers(min_value=1, max_value=purchase.MAX_QUANTITY)


@given(sale_ids, quantities, sale_ids, quantities)
def test_fingerprints_are_equal_exactly_when_sale_and_quantity_are(
    sale_a: str, qty_a: int, sale_b: str, qty_b: int
) -> None:
    same = (sale_a, qty_a) == (sale_b, qty_b)
    fp_a = purchase.fingerprint(sale_id=sale_a, quantity=qty_a)
    fp_b = purchase.fingerprint(sale_id=sale_b, quantity=qty_b)
    assert (fp_a == fp_b) is same


# --- refusals -------------------------------------------------------------------------------------

REFUSALS: list[tuple[ReserveCode, type[errors.FlashSaleError], str]] = [
    (ReserveCode.NOT_FOUND, errors.SaleNotFound, "sale_not_found"),
    (ReserveCode.RATE_LIMITED, errors.RateLimited, "rate_limited"),
    (ReserveCode.KEY_REUSED, errors.IdempotencyKeyReused, "idempotency_key_reused"),
    (ReserveCode.IN_PROGRESS, errors.RequestInProgress, "request_in_progress"),
    (ReserveCode.CLOSED, errors.SaleClosed, "sale_closed"),
    (ReserveCode.NOT_OPEN, errors.SaleNotOpen, "sale_not_open"),
    (ReserveCode.OVERLOADED, errors.Overloaded, "overloaded"),
    (ReserveCode.LIMIT_REACHED, errors.PurchaseLimitReached, "purchase_limit_reached"),
    (ReserveCode.SOLD_OUT, errors.SoldOut, "sold_out"),
    (ReserveCode.NOT_ADMITTED, errors.NotAdmitted, "not_admitted"),
]


def test_every_refusal_code_is_mapped() -> None:
    mapped = {code for code, _, _ in REFUSALS}
    assert mapped | {ReserveCode.RESERVED, ReserveCode.REPLAYED} == set(ReserveCode)


@pytest.mark.parametrize(("code", "error", "stable_code"), REFUSALS)
def test_refusal_codes_raise_their_domain_error(
    code: ReserveCode, error: type[errors.FlashSaleError], stable_code: str
) -> None:
    with pytest.raises(error) as caught:
        purchase.raise_for_refusal(code, retry_after_s=3, opens_at=OPENS)
    assert type(caught.value) is error
    assert caught.value.code == stable_code
    assert caught.value.detail


def test_exactly_the_success_codes_raise_nothing() -> None:
    quiet = set()
    for code in ReserveCode:
        try:
            purchase.raise_for_refusal(code, retry_after_s=1, opens_at=OPENS)
        except errors.FlashSaleError:
            continue
        quiet.add(code)
    assert quiet == {ReserveCode.RESERVED, ReserveCode.REPLAYED}


@pytest.mark.parametrize(
    "code", [ReserveCode.RATE_LIMITED, ReserveCode.OVERLOADED, ReserveCode.IN_PROGRESS]
)
def test_throttling_refusals_carry_the_scripts_retry_after(code: ReserveCode) -> None:
    with pytest.raises(errors.FlashSaleError) as caught:
        purchase.raise_for_refusal(code, retry_after_s=7, opens_at=OPENS)
    assert getattr(caught.value, "retry_after_s", None) == 7


def test_retry_after_is_never_below_one_second() -> None:
    with pytest.raises(errors.RateLimited) as caught:
        purchase.raise_for_refusal(ReserveCode.RATE_LIMITED, retry_after_s=0, opens_at=OPENS)
    assert caught.value.retry_after_s == 1
    assert repr(caught.value) == "<RateLimited retry_after=1s>"


def test_not_open_carries_the_opening_time() -> None:
    with pytest.raises(errors.SaleNotOpen) as caught:
        purchase.raise_for_refusal(ReserveCode.NOT_OPEN, retry_after_s=1, opens_at=OPENS)
    assert caught.value.opens_at == OPENS
    assert OPENS.isoformat() in caught.value.detail


def test_codes_match_the_reserve_script_numbering() -> None:
    # reserve.lua returns these numbers; renumbering one side alone would silently mismap refusals.
    assert [int(c) for c in ReserveCode] == list(range(12))


def test_reservation_keeps_the_body_and_the_replay_flag() -> None:
    reservation = purchase.Reservation(body=b'{"order_id":"x"}', replayed=True)
    assert reservation.body == b'{"order_id":"x"}'
    assert reservation.replayed
