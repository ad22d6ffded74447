"""index.html of a report: one self-contained page (the plots embedded as data: URIs, no script,
no external asset), so it can be mailed or opened from a CI artifact as it is."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 960px; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; }
td, th { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: left; vertical-align: top; }
.ok { color: #080; font-weight: bold; } .bad { color: #b00; font-weight: bold; }
img { max-width: 100%; margin: 0.5rem 0; border: 1px solid #eee; }
pre { background: #f6f6f6; padding: 0.8rem; overflow-x: auto; font-size: 0.8rem; }
"""


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, dict):
        return escape(", ".join(f"{k}: {v}" for k, v in value.items()))
    return escape("-" if value is None else f"{value}")


def _rows(pairs: Sequence[tuple[str, Any]]) -> str:
    return "".join(f"<tr><th>{escape(k)}</th><td>{_cell(v)}</td></tr>" for k, v in pairs)


def _verdict(ok: bool, yes: str = "yes", no: str = "NO") -> str:
    return f'<span class="ok">{yes}</span>' if ok else f'<span class="bad">{no}</span>'


def _image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{escape(path.stem)}" src="data:image/png;base64,{data}">'


def render(summary: dict[str, Any], images: Sequence[Path]) -> str:
    crowd = summary["crowd"]
    checks = "".join(
        f"<tr><td>{c['number']}. {escape(c['name'])}</td><td>{_verdict(c['ok'])}</td>"
        f"<td>{escape(c['detail'])}</td></tr>"
        for c in summary["invariants"]
    )
    goals = "".join(
        f"<tr><td>{escape(t['target'])}</td><td>{_verdict(t['met'], 'met', 'missed')}</td>"
        f"<td>{_cell(t['value'])}</td></tr>"
        for t in summary["targets"]
    )
    status = _verdict(summary["ok"], "passed", "FAILED: " + "; ".join(summary["failures"]))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>flashsale demo {escape(summary["sale_id"])}</title><style>{STYLE}</style></head><body>
<h1>Flash sale {escape(summary["sale_id"])}</h1>
<p>{summary["stock"]:,} units, {summary["users"]:,} buyers, gateway: {escape(summary["gateway"])}.
Result: {status}</p>
<h2>The crowd</h2><table>{_rows(list(crowd.items()))}</table>
<h2>Latency (ms)</h2><table>
{_rows([("reserved ack", summary["ack_ms"]), ("every purchase answer", summary["purchase_ms"])])}
</table>
<h2>Timeline (seconds from the opening)</h2>
<table>{_rows(list(summary["timeline_s"].items()))}</table>
<h2>Units at the end</h2><table>{_rows(list(summary["units"].items()))}</table>
<h2>Invariants</h2><table><tr><th>check</th><th>holds</th><th>detail</th></tr>{checks}</table>
<h2>Targets</h2><table><tr><th>target</th><th></th><th>value</th></tr>{goals}</table>
<h2>Over time</h2>
{"".join(_image(p) for p in images)}
<h2>summary.json</h2><pre>{escape(json.dumps(summary, indent=2))}</pre>
</body></html>
"""
