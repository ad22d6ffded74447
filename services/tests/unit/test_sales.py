"""The sale lifecycle (domain/sales.py): `derive_state` at every boundary, the public sale document,
`validate_definition`, `parse_price`/`format_price` and the time helpers. Pure: no I/O."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flashsale.domain import sales
from flashsale.domain.sales import SaleDefinition, SaleSnapshot, SaleState, derive_state
from flashsale.errors import InvalidRequest, InvalidSale

OPENS = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
CLOSES = OPENS + timedelta(minutes=5)
MS = timedelta(milliseconds=1)


def state_at(now: datetime, *, remaining: int = 10, closed: bool = False) -> SaleState:
    return derive_state(
        now=now, opens_at=OPENS, closes_at=CLOSES, remaining=remaining, closed=closed
    )


def definition(**changes: Any) -> SaleDefinition:
    base = SaleDefinition(
        sale_id="sneaker-drop-1",
        name="Sneaker",
        price=Decimal("49.99"),
        stock=1000,
        opens_at=OPENS,
        closes_at=CLOSES,
        per_user_limit=1,
    )
    return replace(base, **changes)


# --- derive_state ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (OPENS - timedelta(days=1), SaleState.SCHEDULED),
        (OPENS - MS, SaleState.SCHEDULED),
        (OPENS, SaleState.OPEN),  # opens_at is inclusive
        (OPENS + MS, SaleState.OPEN),
        (CLOSES - MS, SaleState.OPEN),
        (CLOSES, SaleState.CLOSED),  # now >= closes_at is closed
        (CLOSES + timedelta(days=1), SaleState.CLOSED),
    ],
)
def test_state_follows_the_window_at_every_boundary(now: datetime, expected: SaleState) -> None:
    assert state_at(now) is expected


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (OPENS - MS, SaleState.SCHEDULED),  # a scheduled sale with no stock is still scheduled
        (OPENS, SaleState.SOLD_OUT),
        (CLOSES - MS, SaleState.SOLD_OUT),
        (CLOSES, SaleState.CLOSED),  # closed wins over sold out
    ],
)
def test_no_stock_is_sold_out_only_inside_the_window(now: datetime, expected: SaleState) -> None:
    assert state_at(now, remaining=0) is expected


def test_negative_remaining_counts_as_sold_out() -> None:
    assert state_at(OPENS, remaining=-1) is SaleState.SOLD_OUT


def test_one_unit_left_is_open() -> None:
    assert state_at(OPENS, remaining=1) is SaleState.OPEN


@pytest.mark.parametrize("now", [OPENS - timedelta(hours=1), OPENS, CLOSES - MS])
def test_closed_flag_closes_the_sale_whatever_the_time(now: datetime) -> None:
    assert state_at(now, closed=True) is SaleState.CLOSED
    assert state_at(now, remaining=0, closed=True) is SaleState.CLOSED


def test_a_sale_that_gets_a_unit_back_is_open_again() -> None:
    assert state_at(OPENS + MS, remaining=0) is SaleState.SOLD_OUT
    assert state_at(OPENS + 2 * MS, remaining=1) is SaleState.OPEN


@given(
    offset_ms=st.integers(min_value=-(10**9), max_value=10**9),
    remaining=st.integers(min_value=-5, max_value=10**6),
    closed=st.booleans(),
)
def test_state_is_exactly_the_contract_rule(offset_ms: int, remaining: int, closed: bool) -> None:
    now = OPENS + timedelta(milliseconds=offset_ms)
    if closed or now >= CLOSES:
        expected = SaleState.CLOSED
    elif now < OPENS:
        expected = SaleState.SCHEDULED
    elif remaining == 0 or remaining < 0:
        expected = SaleState.SOLD_OUT
    else:
        expected = SaleState.OPEN
    assert state_at(now, remaining=remaining, closed=closed) is expected


# --- the snapshot and its public document ---------------------------------------------------------


def snapshot(**changes: Any) -> SaleSnapshot:
    base = SaleSnapshot(
        sale_id="sneaker-drop-1",
        name="Sneaker",
        price=Decimal("49.9"),
        initial_stock=100,
        remaining=7,
        opens_at=OPENS,
        closes_at=CLOSES,
        per_user_limit=2,
    )
    return replace(base, **changes)


def test_document_has_every_contract_field_with_contract_formats() -> None:
    doc = snapshot().document(OPENS + timedelta(seconds=1))
    assert doc == {
        "sale_id": "sneaker-drop-1",
        "name": "Sneaker",
        "price": "49.90",
        "initial_stock": 100,
        "remaining": 7,
        "state": "open",
        "opens_at": "2026-11-27T12:00:00.000Z",
        "closes_at": "2026-11-27T12:05:00.000Z",
        "per_user_limit": 2,
    }


def test_snapshot_state_uses_its_closed_flag_and_stock() -> None:
    assert snapshot().state(OPENS - MS) is SaleState.SCHEDULED
    assert snapshot(remaining=0).state(OPENS) is SaleState.SOLD_OUT
    assert snapshot(closed=True).state(OPENS) is SaleState.CLOSED
    assert snapshot().document(CLOSES)["state"] == "closed"


# --- validate_definition --------------------------------------------------------------------------


def test_a_good_definition_is_returned_unchanged() -> None:
    sale = definition()
    assert sales.validate_definition(sale) is sale


@pytest.mark.parametrize(
    "sale_id",
    ["a", "0", "a-b", "sale-123", "x" * 63, "a" + "-" * 61 + "b"],
)
def test_sale_ids_of_lowercase_letters_digits_and_inner_dashes_are_valid(sale_id: str) -> None:
    assert sales.validate_definition(definition(sale_id=sale_id)).sale_id == sale_id


@pytest.mark.parametrize(
    "sale_id",
    ["", "x" * 64, "-a", "a-", "Sale", "a_b", "a.b", "a b", "a:b", "a{b}", "é", "a/b", "a\n"],
)
def test_malformed_sale_ids_are_refused(sale_id: str) -> None:
    with pytest.raises(InvalidSale, match="sale_id"):
        sales.validate_definition(definition(sale_id=sale_id))


@pytest.mark.parametrize("name", ["", "   ", "\t\n", "x" * 201])
def test_empty_or_overlong_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidSale, match="name"):
        sales.validate_definition(definition(name=name))


def test_a_name_of_200_characters_is_accepted() -> None:
    assert sales.validate_definition(definition(name="x" * 200)).name == "x" * 200


@pytest.mark.parametrize("stock", [0, -1, sales.MAX_STOCK + 1])
def test_stock_outside_its_range_is_refused(stock: int) -> None:
    with pytest.raises(InvalidSale, match="stock"):
        sales.validate_definition(definition(stock=stock))


@pytest.mark.parametrize("stock", [1, sales.MAX_STOCK])
def test_stock_at_its_bounds_is_accepted(stock: int) -> None:
    assert sales.validate_definition(definition(stock=stock)).stock == stock


@pytest.mark.parametrize("limit", [0, -3])
def test_per_user_limit_below_one_is_refused(limit: int) -> None:
    with pytest.raises(InvalidSale, match="per_user_limit"):
        sales.validate_definition(definition(per_user_limit=limit))


def test_naive_opening_time_is_refused() -> None:
    with pytest.raises(InvalidSale, match="opens_at"):
        sales.validate_definition(definition(opens_at=OPENS.replace(tzinfo=None)))


def test_naive_closing_time_is_refused_before_any_comparison() -> None:
    with pytest.raises(InvalidSale, match="closes_at"):
        sales.validate_definition(definition(closes_at=CLOSES.replace(tzinfo=None)))


@pytest.mark.parametrize("closes_at", [OPENS, OPENS - MS])
def test_window_must_end_after_it_starts(closes_at: datetime) -> None:
    with pytest.raises(InvalidSale, match="closes_at must be after opens_at"):
        sales.validate_definition(definition(closes_at=closes_at))


def test_window_of_exactly_24_hours_is_accepted_and_a_millisecond_more_refused() -> None:
    day = sales.validate_definition(definition(closes_at=OPENS + sales.MAX_DURATION))
    assert day.closes_at - day.opens_at == timedelta(hours=24)
    with pytest.raises(InvalidSale, match="24 hours"):
        sales.validate_definition(definition(closes_at=OPENS + sales.MAX_DURATION + MS))


def test_window_in_another_time_zone_is_compared_as_instants() -> None:
    plus_two = timezone(timedelta(hours=2))
    # 14:01 at +02:00 is 12:01 UTC: one minute after OPENS, so the window is valid.
    sale = definition(closes_at=datetime(2026, 11, 27, 14, 1, tzinfo=plus_two))
    assert sales.validate_definition(sale) is sale


def test_definition_with_a_bad_price_is_refused() -> None:
    with pytest.raises(InvalidSale, match="price"):
        sales.validate_definition(definition(price=Decimal("0")))


def test_invalid_sale_is_an_invalid_request() -> None:
    with pytest.raises(InvalidRequest) as caught:
        sales.validate_definition(definition(stock=0))
    assert caught.value.code == "invalid_request"


# --- parse_price / format_price -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("49.99", "49.99"),
        ("49.9", "49.90"),
        ("49", "49.00"),
        ("0.01", "0.01"),
        (" 12.50 ", "12.50"),
        ("1000000", "1000000.00"),
        ("1000000.00", "1000000.00"),
        (5, "5.00"),
        (Decimal("7.5"), "7.50"),
        ("1E+2", "100.00"),
    ],
)
def test_prices_parse_to_two_decimal_places(raw: str | int | Decimal, expected: str) -> None:
    price = sales.parse_price(raw)
    assert price == Decimal(expected)
    assert str(price) == expected
    assert sales.format_price(price) == expected


@pytest.mark.parametrize("raw", [49.99, 1.0, 0.5, float("nan"), float("inf")])
def test_floats_are_refused_even_when_exact(raw: float) -> None:
    with pytest.raises(InvalidSale, match="not a float"):
        sales.parse_price(raw)


@pytest.mark.parametrize("raw", ["49.999", "0.001", "1.005", "49.990"])
def test_more_than_two_decimal_places_are_refused(raw: str) -> None:
    with pytest.raises(InvalidSale, match="more than 2 decimal places"):
        sales.parse_price(raw)


@pytest.mark.parametrize(
    "raw", ["0", "0.00", "-0", "-1", "-49.99", "1000000.01", "1e7", "1e1000000", "NaN", "Infinity"]
)
def test_zero_negative_huge_and_non_finite_prices_are_refused(raw: str) -> None:
    with pytest.raises(InvalidSale, match="price must be > 0"):
        sales.parse_price(raw)


@pytest.mark.parametrize("raw", ["", "abc", "49,99", "$49", "49.99.1", "1 000", "0x10"])
def test_non_numbers_are_refused(raw: str) -> None:
    with pytest.raises(InvalidSale, match="not a decimal number") as caught:
        sales.parse_price(raw)
    assert caught.value.__cause__ is not None  # the cause is chained (STYLE 12)


def test_a_boolean_is_not_a_price() -> None:
    with pytest.raises(InvalidSale):
        sales.parse_price(True)


@given(cents=st.integers(min_value=1, max_value=100_000_000))
def test_every_whole_number_of_cents_round_trips(cents: int) -> None:
    text = f"{cents // 100}.{cents % 100:02d}"
    price = sales.parse_price(text)
    assert price * 100 == cents
    assert sales.format_price(price) == text
    assert sales.parse_price(sales.format_price(price)) == price


def test_format_price_rounds_to_cents() -> None:
    assert sales.format_price(Decimal("3")) == "3.00"
    assert sales.format_price(Decimal("3.456")) == "3.46"


# --- time helpers ---------------------------------------------------------------------------------


def test_rfc3339_is_utc_with_milliseconds_and_z() -> None:
    moment = datetime(2026, 1, 2, 4, 5, 6, 789_123, tzinfo=timezone(timedelta(hours=2)))
    assert sales.rfc3339(moment) == "2026-01-02T02:05:06.789Z"


def test_milliseconds_round_trip() -> None:
    assert sales.to_ms(OPENS) == 1_795_780_800_000
    assert sales.from_ms(sales.to_ms(OPENS)) == OPENS
    assert sales.from_ms(0) == datetime(1970, 1, 1, tzinfo=UTC)
    assert sales.from_ms(1).tzinfo is UTC


@given(ms=st.integers(min_value=0, max_value=4_102_444_800_000))
def test_from_ms_then_to_ms_is_the_identity(ms: int) -> None:
    assert sales.to_ms(sales.from_ms(ms)) == ms


@pytest.mark.parametrize("ms", [1, 1001, 1_795_780_800_001, 1_795_780_800_999])
def test_millisecond_precise_times_keep_their_millisecond(ms: int) -> None:
    # An admin's "12:00:00.001Z" must not become 12:00:00.000 on the way into Redis.
    moment = sales.EPOCH + timedelta(milliseconds=ms)
    assert sales.to_ms(moment) == ms


def test_to_ms_floors_sub_millisecond_parts() -> None:
    assert sales.to_ms(OPENS + timedelta(microseconds=999)) == sales.to_ms(OPENS)
    assert sales.to_ms(OPENS - timedelta(microseconds=1)) == sales.to_ms(OPENS) - 1


def test_to_ms_is_the_same_instant_in_any_time_zone() -> None:
    plus_two = OPENS.astimezone(timezone(timedelta(hours=2)))
    assert sales.to_ms(plus_two) == sales.to_ms(OPENS)


def test_a_naive_time_is_taken_as_local_time_like_timestamp_does() -> None:
    naive = datetime(2026, 11, 27, 12, 0, 0, 5000)
    assert sales.to_ms(naive) == round(naive.timestamp() * 1000)
