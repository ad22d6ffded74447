"""The README's settings table is generated from config.Settings and must not drift from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from flashsale.config import Settings
from flashsale.local.envdoc import markdown_table, rows, with_table

README = Path(__file__).resolve().parents[3] / "README.md"


def test_every_setting_has_a_row_with_a_description() -> None:
    names = {env for env, _, _ in rows()}
    assert "FLASHSALE_REDIS__URL" in names
    assert "FLASHSALE_AUTH__JWT_SECRET" in names
    groups = [n for n, f in Settings.model_fields.items() if hasattr(f.annotation, "model_fields")]
    assert len(names) > len(groups)
    assert all(description for _, _, description in rows())


def test_the_readme_table_is_current() -> None:
    text = README.read_text()
    assert with_table(text) == text, "run: flashsale env-doc --write README.md"
    assert markdown_table() in text


def test_a_document_without_markers_is_refused() -> None:
    with pytest.raises(ValueError, match="env-doc"):
        with_table("no markers here")
