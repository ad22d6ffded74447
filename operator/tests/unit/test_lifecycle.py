"""The sale lifecycle, transition by transition: spec parsing, the sale-id mapping and decide()."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from flashsale_operator import lifecycle
from flashsale_operator.lifecycle import Action, Observed, Phase, Recorded

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
TOLERANCE = timedelta(seconds=1)
SPEC: dict[str, Any] = {
    "product": "Sneakers",
    "price": "49.99",
    "stock": 1000,
    "opensAt": "2026-11-27T12:00:00Z",
    "duration": "5m",
    "perUserLimit": 2,
}


def parse(spec: dict[str, Any] | None = None, **changes: Any) -> lifecycle.SaleSpec:
    return lifecycle.parse_spec(
        {**(spec or SPEC), **changes}, namespace="shop", name="summer", created=T0
    )


SALE = parse()


def observed(state: str = "scheduled", **changes: Any) -> Observed:
    base = Observed(
        state=state,
        opens_at=SALE.opens_at,
        closes_at=SALE.closes_at,
        initial_stock=1000,
        remaining=1000,
    )
    return dataclasses.replace(base, **changes)


UPSERTED = Recorded(sale_created=True, observed_generation=1)


def decide(
    *,
    sale: lifecycle.SaleSpec = SALE,
    seen: Observed | None,
    recorded: Recorded = UPSERTED,
    generation: int = 1,
    at: timedelta = timedelta(),
) -> lifecycle.Decision:
    return lifecycle.decide(
        sale,
        observed=seen,
        recorded=recorded,
        generation=generation,
        now=T0 + at,
        tolerance=TOLERANCE,
    )


# --- parsing ---------------------------------------------------------------------------------


def test_parse_spec_reads_every_field() -> None:
    assert (
        lifecycle.SaleSpec(
            sale_id="shop-summer",
            product="Sneakers",
            price="49.99",
            stock=1000,
            opens_at=T0,
            duration=timedelta(minutes=5),
            per_user_limit=2,
        )
        == SALE
    )
    assert SALE.closes_at == T0 + timedelta(minutes=5)


def test_parse_spec_defaults_open_at_creation_for_five_minutes_one_unit_per_user() -> None:
    sale = lifecycle.parse_spec(
        {"product": "p", "price": "1", "stock": 5}, namespace="ns", name="n", created=T0
    )
    assert (sale.opens_at, sale.duration, sale.per_user_limit) == (T0, timedelta(minutes=5), 1)


def test_parse_spec_ignores_fields_it_does_not_know_yet() -> None:
    assert parse(laterField={"enabled": True}) == SALE


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"product": ""}, "spec.product"),
        ({"product": "x" * 201}, "spec.product"),
        ({"price": "0"}, "spec.price"),
        ({"price": "49.999"}, "spec.price"),
        ({"price": 49.99}, "spec.price"),
        ({"price": "-1"}, "spec.price"),
        ({"price": "1000000.01"}, "at most 1000000"),
        ({"stock": 0}, "spec.stock"),
        ({"stock": True}, "spec.stock"),
        ({"stock": "10"}, "spec.stock"),
        ({"perUserLimit": 0}, "spec.perUserLimit"),
        ({"stock": 1, "perUserLimit": 2}, "cannot exceed"),
        ({"opensAt": "tomorrow"}, "spec.opensAt"),
        ({"opensAt": "2026-11-27T12:00:00"}, "spec.opensAt"),
        ({"duration": "5 minutes"}, "spec.duration"),
        ({"duration": "0s"}, "more than 0s"),
        ({"duration": "24h1s"}, "at most 24h"),
        ({"saleId": "Bad_Id"}, "spec.saleId"),
    ],
)
def test_parse_spec_refuses_invalid_fields(changes: dict[str, Any], problem: str) -> None:
    with pytest.raises(lifecycle.InvalidSpec, match=problem):
        parse(**changes)


def test_parse_spec_lists_every_problem_at_once() -> None:
    with pytest.raises(lifecycle.InvalidSpec) as e:
        parse(price="free", stock=-1, duration="forever")
    assert str(e.value).count(";") == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5m", timedelta(minutes=5)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1.5s", timedelta(seconds=1.5)),
        ("300ms", timedelta(milliseconds=300)),
        ("2h0m0s", timedelta(hours=2)),
        ("10us", timedelta(microseconds=10)),
    ],
)
def test_parse_duration_reads_go_durations(text: str, expected: timedelta) -> None:
    assert lifecycle.parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "5", "m", "5 m", "-5m", "5d", "5m garbage"])
def test_parse_duration_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        lifecycle.parse_duration(text)


# --- the sale-id mapping ---------------------------------------------------------------------


def test_sale_id_defaults_to_namespace_dash_name() -> None:
    assert lifecycle.default_sale_id(namespace="shop", name="summer-sale") == "shop-summer-sale"


def test_sale_id_replaces_dots() -> None:
    assert lifecycle.default_sale_id(namespace="shop", name="sale.v2") == "shop-sale-v2"


def test_long_sale_ids_are_shortened_with_a_stable_hash() -> None:
    name = "a" * 63
    sale_id = lifecycle.default_sale_id(namespace="shop", name=name)
    assert len(sale_id) == 63
    assert lifecycle.SALE_ID_RE.fullmatch(sale_id)
    assert sale_id == lifecycle.default_sale_id(namespace="shop", name=name)
    assert sale_id != lifecycle.default_sale_id(namespace="shop", name=name[:-1] + "b")


def test_shortening_never_leaves_a_dash_before_the_hash() -> None:
    sale_id = lifecycle.default_sale_id(namespace="n" * 48, name="-".join(["x"] * 20))
    assert "--" not in sale_id
    assert lifecycle.SALE_ID_RE.fullmatch(sale_id)


def test_an_explicit_sale_id_wins() -> None:
    assert parse(saleId="black-friday").sale_id == "black-friday"


# --- decide(): creation ----------------------------------------------------------------------


def test_created_before_opens_at_upserts_the_spec_window_and_waits() -> None:
    decision = decide(seen=None, recorded=Recorded(), at=-timedelta(minutes=10))
    assert decision.phase is Phase.SCHEDULED
    assert decision.actions == (Action.UPSERT,)
    assert decision.upsert == lifecycle.Upsert(
        stock=1000, opens_at=SALE.opens_at, closes_at=SALE.closes_at
    )


def test_once_upserted_a_scheduled_sale_sleeps_until_opens_at() -> None:
    decision = decide(seen=observed(), at=-timedelta(seconds=30))
    assert (decision.phase, decision.actions) == (Phase.SCHEDULED, ())
    assert decision.wake_in == 30


def test_created_after_opens_at_upserts_then_opens_at_once() -> None:
    first = decide(seen=None, recorded=Recorded(), at=timedelta(minutes=1))
    assert (first.phase, first.actions) == (Phase.OPEN, (Action.UPSERT,))
    second = decide(seen=observed("open"), at=timedelta(minutes=1))
    assert (second.phase, second.actions) == (Phase.OPEN, (Action.OPEN,))
    opened = lifecycle.remember(UPSERTED, action=Action.OPEN, generation=1, at=T0)
    third = decide(seen=observed("open"), recorded=opened, at=timedelta(minutes=1))
    assert (third.phase, third.actions) == (Phase.OPEN, ())
    assert third.wake_in == 240


def test_an_already_expired_window_is_closed_without_creating_a_sale() -> None:
    decision = decide(seen=None, recorded=Recorded(), at=timedelta(minutes=6))
    assert (decision.phase, decision.actions) == (Phase.CLOSED, ())
    (condition,) = decision.conditions
    assert (condition.type, condition.status, condition.reason) == ("Ready", False, "WindowExpired")


def test_an_expired_resource_edited_to_a_future_window_is_created() -> None:
    later = parse(opensAt="2026-11-27T13:00:00Z")
    decision = decide(
        sale=later, seen=None, recorded=Recorded(), generation=2, at=timedelta(minutes=6)
    )
    assert (decision.phase, decision.actions) == (Phase.SCHEDULED, (Action.UPSERT,))


# --- decide(): opening, selling out, closing -------------------------------------------------


def test_at_opens_at_the_explicit_open_follows_the_api() -> None:
    decision = decide(seen=observed("open"), at=timedelta(milliseconds=5))
    assert (decision.phase, decision.actions) == (Phase.OPEN, (Action.OPEN,))


def test_sold_out_is_mirrored_and_the_sale_still_closes_on_time() -> None:
    opened = dataclasses.replace(UPSERTED, opened_at=T0)
    selling = decide(
        seen=observed("sold_out", remaining=0, pending=1000),
        recorded=opened,
        at=timedelta(minutes=2),
    )
    assert (selling.phase, selling.actions, selling.wake_in) == (Phase.SOLD_OUT, (), 180)
    closing = decide(
        seen=observed("closed", remaining=0, confirmed=1000),
        recorded=opened,
        at=timedelta(minutes=5),
    )
    assert (closing.phase, closing.actions) == (Phase.SOLD_OUT, (Action.CLOSE,))
    closed = lifecycle.remember(opened, action=Action.CLOSE, generation=1, at=SALE.closes_at)
    after = decide(
        seen=observed("closed", remaining=0, confirmed=1000),
        recorded=closed,
        at=timedelta(minutes=6),
    )
    assert (after.phase, after.actions) == (Phase.SOLD_OUT, ())


def test_a_unit_released_while_open_makes_a_sold_out_sale_open_again() -> None:
    opened = dataclasses.replace(UPSERTED, opened_at=T0)
    decision = decide(
        seen=observed("open", remaining=1, failed=1), recorded=opened, at=timedelta(minutes=2)
    )
    assert decision.phase is Phase.OPEN


def test_at_closes_at_the_sale_is_closed_once_and_stays_closed() -> None:
    opened = dataclasses.replace(UPSERTED, opened_at=T0)
    closing = decide(
        seen=observed("closed", remaining=400), recorded=opened, at=timedelta(minutes=5)
    )
    assert (closing.phase, closing.actions) == (Phase.CLOSED, (Action.CLOSE,))
    closed = lifecycle.remember(opened, action=Action.CLOSE, generation=1, at=SALE.closes_at)
    assert decide(seen=observed("closed", remaining=400), recorded=closed).actions == ()
    assert decide(seen=None, recorded=closed).phase is Phase.CLOSED  # deleted afterwards


def test_a_sale_closed_early_in_the_api_is_closed_for_the_operator_too() -> None:
    opened = dataclasses.replace(UPSERTED, opened_at=T0)
    decision = decide(
        seen=observed("closed", remaining=10), recorded=opened, at=timedelta(minutes=1)
    )
    assert (decision.phase, decision.actions) == (Phase.CLOSED, (Action.CLOSE,))


def test_a_sale_deleted_behind_the_operators_back_is_an_error() -> None:
    decision = decide(seen=None, at=timedelta(minutes=1))
    assert (decision.phase, decision.actions) == (Phase.ERROR, ())
    assert decision.conditions[0].reason == "SaleNotFound"


# --- decide(): clock skew --------------------------------------------------------------------


def test_clock_ahead_of_the_api_waits_for_it_at_opens_at() -> None:
    decision = decide(seen=observed("scheduled"), at=timedelta(milliseconds=300))
    assert (decision.phase, decision.actions) == (Phase.SCHEDULED, ())
    assert decision.wake_in == lifecycle.POLL_S


def test_clock_ahead_beyond_the_tolerance_forces_the_open() -> None:
    decision = decide(seen=observed("scheduled"), at=TOLERANCE)
    assert (decision.phase, decision.actions) == (Phase.SCHEDULED, (Action.OPEN,))


def test_clock_behind_the_api_follows_its_open_early() -> None:
    decision = decide(seen=observed("open"), at=-timedelta(seconds=2))
    assert (decision.phase, decision.actions) == (Phase.OPEN, (Action.OPEN,))
    assert decision.wake_in == 302


def test_clock_ahead_of_the_api_waits_for_it_at_closes_at_then_forces_the_close() -> None:
    opened = dataclasses.replace(UPSERTED, opened_at=T0)
    waiting = decide(seen=observed("open"), recorded=opened, at=timedelta(minutes=5, seconds=0.5))
    assert (waiting.phase, waiting.actions, waiting.wake_in) == (Phase.OPEN, (), lifecycle.POLL_S)
    forced = decide(seen=observed("open"), recorded=opened, at=timedelta(minutes=5, seconds=1))
    assert forced.actions == (Action.CLOSE,)


# --- decide(): spec edits --------------------------------------------------------------------


def test_an_edit_before_opening_is_applied_whole() -> None:
    edited = parse(stock=500, opensAt="2026-11-27T12:30:00Z", duration="10m", price="39.99")
    decision = decide(sale=edited, seen=observed(), generation=2, at=-timedelta(minutes=5))
    assert decision.actions == (Action.UPSERT,)
    assert decision.upsert == lifecycle.Upsert(
        stock=500, opens_at=edited.opens_at, closes_at=edited.opens_at + timedelta(minutes=10)
    )
    assert [(c.type, c.status, c.reason) for c in decision.conditions] == [
        ("SpecApplied", True, "Applied")
    ]


def test_edits_after_opening_keep_the_opening_time_and_move_the_close() -> None:
    opened_at = T0 + timedelta(seconds=2)  # forced early by a skewed clock, say
    edited = parse(price="39.99", duration="10m", perUserLimit=1)
    seen = observed("open", opens_at=opened_at, remaining=900, pending=100)
    decision = decide(sale=edited, seen=seen, generation=2, at=timedelta(minutes=1))
    assert decision.phase is Phase.OPEN
    assert decision.upsert == lifecycle.Upsert(
        stock=1000, opens_at=opened_at, closes_at=opened_at + timedelta(minutes=10)
    )
    assert decision.conditions[0].reason == "OpensAtLocked"


def test_a_stock_change_after_orders_is_refused_and_the_rest_applied() -> None:
    edited = parse(stock=2000, price="39.99")
    seen = observed("open", remaining=990, confirmed=10)
    decision = decide(sale=edited, seen=seen, generation=2, at=timedelta(minutes=1))
    assert decision.actions == (Action.UPSERT,)
    assert decision.upsert is not None
    assert decision.upsert.stock == 1000
    (condition,) = decision.conditions
    assert (condition.type, condition.status, condition.reason) == (
        "SpecApplied",
        False,
        "StockChangeRefused",
    )
    assert "spec.stock 2000 not applied" in condition.message


def test_a_stock_change_while_open_but_before_any_order_is_applied() -> None:
    decision = decide(
        sale=parse(stock=2000), seen=observed("open"), generation=2, at=timedelta(minutes=1)
    )
    assert decision.upsert is not None
    assert decision.upsert.stock == 2000


def test_failed_orders_count_as_orders_for_the_stock_lock() -> None:
    assert observed(failed=1).has_orders
    assert not observed().has_orders


def test_edits_after_closing_are_not_applied() -> None:
    closed = dataclasses.replace(UPSERTED, opened_at=T0, closed_at=SALE.closes_at)
    decision = decide(
        sale=parse(duration="1h"), seen=observed("closed"), recorded=closed, generation=2
    )
    assert (decision.phase, decision.actions) == (Phase.CLOSED, ())
    assert decision.conditions[0].reason == "SaleClosed"


def test_an_edit_while_the_api_already_closed_it_does_not_reopen_it() -> None:
    decision = decide(
        sale=parse(duration="1h"), seen=observed("closed"), generation=2, at=timedelta(minutes=6)
    )
    assert decision.actions == (Action.CLOSE,)
    assert decision.conditions[0].reason == "SaleClosed"


# --- bookkeeping -----------------------------------------------------------------------------


def test_recorded_reads_the_operators_status_fields() -> None:
    status = {
        "saleId": "shop-summer",
        "observedGeneration": 3,
        "openedAt": "2026-11-27T12:00:00.000Z",
        "closedAt": "garbage",
    }
    assert Recorded.from_status(status) == Recorded(
        sale_created=True, observed_generation=3, opened_at=T0, closed_at=None
    )
    assert Recorded.from_status({}) == Recorded()


def test_remember_an_upsert_marks_the_generation_applied() -> None:
    assert lifecycle.remember(Recorded(), action=Action.UPSERT, generation=4) == Recorded(
        sale_created=True, observed_generation=4
    )


def test_has_sale_is_the_timer_filter() -> None:
    assert lifecycle.has_sale({"saleId": "x"}, spec={})
    assert not lifecycle.has_sale({})
