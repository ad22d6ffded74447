"""The chaos report and its counts, on synthetic facts: each kind of breakage the scenarios look for
(an oversold unit, a lost 202, a duplicated order, a double charge) shows in its column, and the
report and command read as they should. No stack needed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flashsale import cli
from flashsale.domain.invariants import ChargeFact, OrderFact, SaleFacts
from flashsale.local import chaos
from flashsale.local.chaosrun import SHORT, Tally, count_facts
from flashsale.local.crowd import CrowdLog


def facts(orders: list[OrderFact], *, acked: list[str], charges: list[ChargeFact]) -> SaleFacts:
    return SaleFacts(
        sale_id="s",
        initial_stock=2,
        per_user_limit=1,
        remaining=0,
        orders=orders,
        acknowledged_order_ids=acked,
        charges=charges,
    )


def told(*pairs: tuple[str, str]) -> CrowdLog:
    log = CrowdLog()
    for key, order_id in pairs:
        log.accepted.setdefault(key, set()).add(order_id)
    return log


def test_a_clean_sale_counts_zeros() -> None:
    orders = [OrderFact("o1", "u1", 1, "confirmed"), OrderFact("o2", "u2", 1, "failed")]
    counted = count_facts(
        facts(orders, acked=["o1", "o2"], charges=[ChargeFact("o1", "succeeded")]),
        told(("k1", "o1"), ("k2", "o2")),
        sold=1,
    )
    assert (counted["oversold"], counted["lost"], counted["duplicated"]) == (0, 0, 0)
    assert (counted["double_charged"], counted["orders"], counted["charges"]) == (0, 2, 1)
    assert counted["findings"] == []


def test_every_kind_of_breakage_shows_in_its_column() -> None:
    orders = [
        OrderFact("o1", "u1", 1, "confirmed"),
        OrderFact("o2", "u1", 1, "confirmed"),  # u1 over the limit of 1
        OrderFact("o3", "u3", 1, "pending"),  # 3 units held of 2: oversold
        OrderFact("o4", "u4", 1, "pending"),  # a row without any 202
    ]
    counted = count_facts(
        facts(
            orders,
            acked=["o1", "o2", "o3", "o9"],  # o9: answered 202, no row
            charges=[ChargeFact("o1", "succeeded", charges=2), ChargeFact("x", "succeeded")],
        ),
        told(("k1", "o1"), ("k1", "o5")),  # one key, two order ids
        sold=3,
    )
    assert counted["oversold"] == 2 + 1  # two units past the stock, one past u1's limit
    assert counted["lost"] == 2  # o5 and o9
    assert counted["duplicated"] == 1 + 1  # key k1 twice, o4 without a 202
    assert counted["double_charged"] == 1
    assert any("without an order" in f for f in counted["findings"])
    assert any("sold counter is 3" in f for f in counted["findings"])


def test_the_report_has_the_table_and_every_finding(tmp_path: Path) -> None:
    good = Tally("kills", "kill -9", "s1", requests=10, answers_202=3, verified=True)
    bad = Tally("valkey", "valkey", "s2", requests=5, lost=1, verified=True)
    bad.findings.append("something was lost")
    report = chaos.build_report([good, bad], profile=SHORT, seconds=12.3)
    assert report["ok"] is False
    chaos.write_report(report, tmp_path)
    doc = json.loads((tmp_path / "chaos.json").read_text())
    assert [s["scenario"] for s in doc["scenarios"]] == ["kills", "valkey"]
    assert [s["ok"] for s in doc["scenarios"]] == [True, False]
    text = (tmp_path / "chaos.md").read_text()
    assert "| kills | 10 | 3 | 0 | 0 | 0 | 0 | 0 | 0 | ok |" in text
    assert "| valkey | 5 | 0 | 0 | 0 | 0 | 1 | 0 | 0 | **FAILED** |" in text
    assert "**finding: something was lost**" in text


def test_scenario_names_are_checked_before_anything_starts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert chaos.selected("") == list(chaos.SCENARIOS)
    assert chaos.selected("kills, storms") == ["kills", "storms"]
    assert cli.main(["chaos", "--only", "kills,nope"]) == cli.EXIT_USAGE
    assert "unknown scenarios: nope" in capsys.readouterr().err
