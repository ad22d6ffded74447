"""`flashsale sale create … --waiting-room fifo|random --admit-per-second N --session-seconds S`
against the real API: the settings reach the sale, the knobs alone are a usage error, and a plain
`sale create` switches the room off (PUT is a whole definition)."""

from __future__ import annotations

import pytest

from flashsale.testing import random_sale_id

from .test_cli import cli_env, run, sale_doc

__all__ = ["cli_env"]  # the fixture, imported for the tests below


@pytest.mark.usefixtures("cli_env", "api")
def test_sale_create_with_a_waiting_room(capsys: pytest.CaptureFixture[str]) -> None:
    sale_id = random_sale_id()
    create = ["sale", "create", sale_id, "--stock", "5", "--price", "9.99"]
    code, out, _ = run(
        capsys, *create, "--waiting-room", "random", "--admit-per-second", "40",
        "--session-seconds", "90",
    )  # fmt: skip
    assert code == 0
    assert sale_doc(out)["waiting_room"] == {
        "enabled": True, "mode": "random", "admit_per_second": 40, "session_seconds": 90,
    }  # fmt: skip

    code, out, _ = run(capsys, *create, "--waiting-room", "random")
    assert code == 0
    assert sale_doc(out)["waiting_room"]["admit_per_second"] == 100  # the default

    code, _, err = run(capsys, *create, "--admit-per-second", "40")
    assert code == 2
    assert "--waiting-room" in err

    code, out, _ = run(capsys, *create)
    assert code == 0
    assert "waiting_room" not in sale_doc(out)
