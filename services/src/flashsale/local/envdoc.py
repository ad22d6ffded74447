"""The FLASHSALE_* settings as a Markdown table (`flashsale env-doc`), generated from
config.Settings so the README's table cannot drift from the code (a test compares them)."""

from __future__ import annotations

from pydantic import BaseModel

from flashsale.config import Settings

PREFIX = "FLASHSALE_"


def rows() -> list[tuple[str, str, str]]:
    """(env var, default, description) for every setting, nested groups joined by `__`."""
    out: list[tuple[str, str, str]] = []
    defaults = Settings.model_construct()
    for name, field in Settings.model_fields.items():
        value = getattr(defaults, name)
        if isinstance(value, BaseModel):
            for sub_name, sub_field in type(value).model_fields.items():
                out.append(
                    (
                        f"{PREFIX}{name.upper()}__{sub_name.upper()}",
                        _show(getattr(value, sub_name)),
                        sub_field.description or "",
                    )
                )
        else:
            out.append((f"{PREFIX}{name.upper()}", _show(value), field.description or ""))
    return out


def _show(value: object) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, str) and not value:
        return '""'
    return f"`{value}`"


def markdown_table() -> str:
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    lines += [f"| `{env}` | {default} | {description} |" for env, default, description in rows()]
    return "\n".join(lines)


START, END = "<!-- env-doc:start -->", "<!-- env-doc:end -->"


def with_table(text: str) -> str:
    """`text` (a README) with the block between the env-doc markers replaced by the table."""
    head, start, rest = text.partition(START)
    _, end, tail = rest.partition(END)
    if not start or not end:
        raise ValueError(f"the document has no {START} ... {END} block")
    return f"{head}{START}\n{markdown_table()}\n{END}{tail}"
