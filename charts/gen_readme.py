"""Writes the values table of charts/flashsale/README.md from the `# --` comments in values.yaml.

The same convention as helm-docs (which these machines do not have): a `# -- text` comment,
optionally continued on the following `#` lines, documents the key right below it. The table sits
between the `<!-- values:start -->` and `<!-- values:end -->` markers; the rest of the README is
hand-written.

    python charts/gen_readme.py          # rewrite the table
    python charts/gen_readme.py --check  # exit 1 if README.md is stale (a chart test checks it)

Standard library plus PyYAML only; nothing here is imported by the product.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parent / "flashsale"
START, END = "<!-- values:start -->", "<!-- values:end -->"
KEY_RE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+):(?P<rest>.*)$")


@dataclass(frozen=True)
class Value:
    key: str
    type: str
    default: str
    description: str


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    return "object"


def _lookup(data: Any, path: list[str]) -> Any:
    for part in path:
        data = data[part]
    return data


def _collect_comment(stripped: str, comment: list[str] | None) -> tuple[bool, list[str] | None]:
    """Feed one line to the pending `# --` comment: (line consumed, comment now)."""
    if stripped.startswith("# --"):
        return True, [stripped[4:].strip()]
    if stripped.startswith("#") and comment is not None:
        return True, [*comment, stripped[1:].strip()]
    return False, comment


def documented_values(text: str) -> tuple[list[Value], list[str]]:
    """The documented keys in file order, and the leaf keys no `# --` comment covers."""
    data = yaml.safe_load(text)
    values: list[Value] = []
    stack: list[tuple[int, str]] = []  # (indent, key) of the mappings we are inside
    comment: list[str] | None = None
    skip_deeper_than = -1  # inside a list or scalar block: its lines are not keys
    for line in text.splitlines():
        stripped = line.strip()
        indent = len(line) - len(line.lstrip(" "))
        if skip_deeper_than >= 0 and (not stripped or indent > skip_deeper_than):
            continue
        skip_deeper_than = -1
        consumed, comment = _collect_comment(stripped, comment)
        match = None if consumed else KEY_RE.match(line)
        if match is None:
            if not consumed and stripped and not stripped.startswith("#"):
                comment = None
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = [key for _, key in stack] + [match["key"]]
        value = _lookup(data, path)
        if comment is not None:
            values.append(
                Value(
                    key=".".join(path),
                    type=_type_name(value),
                    default=json.dumps(value, separators=(",", ":")),
                    description=" ".join(comment),
                )
            )
            comment = None
        if isinstance(value, dict) and not match["rest"].strip().startswith("{"):
            stack.append((indent, match["key"]))
        else:
            skip_deeper_than = indent
    covered = [v.key for v in values]
    undocumented = [
        leaf
        for leaf in _leaves(data)
        if not any(leaf == c or leaf.startswith(c + ".") for c in covered)
    ]
    return values, undocumented


def _leaves(data: Any, prefix: str = "") -> list[str]:
    if isinstance(data, dict) and data:
        out: list[str] = []
        for key, value in data.items():
            out.extend(_leaves(value, f"{prefix}{key}."))
        return out
    return [prefix.rstrip(".")]


def render_table(values: list[Value]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    rows = ["| Key | Type | Default | Description |", "|-----|------|---------|-------------|"]
    rows += [
        f"| `{v.key}` | {v.type} | `{cell(v.default)}` | {cell(v.description)} |" for v in values
    ]
    return "\n".join(rows)


def rendered_readme(readme: str, values_yaml: str) -> str:
    values, _ = documented_values(values_yaml)
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{render_table(values)}\n{END}{tail}"


def main(argv: list[str]) -> int:
    readme_path = CHART / "README.md"
    readme = readme_path.read_text()
    values_yaml = (CHART / "values.yaml").read_text()
    _, undocumented = documented_values(values_yaml)
    if undocumented:
        sys.stderr.write(f"values without a `# --` comment: {', '.join(undocumented)}\n")
        return 1
    new = rendered_readme(readme, values_yaml)
    if "--check" in argv:
        if new != readme:
            sys.stderr.write(
                "charts/flashsale/README.md is stale: run python charts/gen_readme.py\n"
            )
            return 1
        return 0
    readme_path.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
