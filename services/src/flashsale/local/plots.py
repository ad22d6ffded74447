"""The report's PNG plots: purchase latency over time, answers per second by status, stock over
time, order status over time. Every plot shares one time axis, seconds from the sale's opening, with
the opening, the sell-out and the settlement marked.

matplotlib's object API (Figure, no pyplot): PNGs are rendered by the Agg canvas without any global
backend or window, so this works on a server and in tests."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from flashsale.local.sampler import CounterSample
from flashsale.local.series import Series

SIZE = (9, 4)  # inches; at DPI this is 900x400 px, readable in a browser without zooming
DPI = 100
STATUS_COLOURS = {
    "202": "tab:green",
    "409": "tab:orange",
    "429": "tab:purple",
    "503": "tab:red",
    "0": "black",
}


@dataclass(frozen=True)
class Marks:
    """Moments drawn on every plot, in seconds from the opening (None: did not happen)."""

    sold_out_s: float | None = None
    settled_s: float | None = None


def _decorate(ax: Axes, marks: Marks, *, title: str, ylabel: str) -> None:
    ax.axvline(0, color="grey", linestyle="--", linewidth=1, label="opening")
    if marks.sold_out_s is not None:
        ax.axvline(marks.sold_out_s, color="tab:red", linestyle=":", linewidth=1, label="sold out")
    if marks.settled_s is not None:
        ax.axvline(marks.settled_s, color="tab:green", linestyle=":", linewidth=1, label="settled")
    ax.set_title(title)
    ax.set_xlabel("seconds from the opening")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small")


def _figure() -> tuple[Figure, Axes]:
    fig = Figure(figsize=SIZE, dpi=DPI)
    FigureCanvasAgg(fig)  # attaches itself: savefig renders PNG through Agg
    return fig, fig.subplots()


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    return path


def _present(xs: Sequence[float], ys: Sequence[float | None]) -> tuple[list[float], list[float]]:
    pairs = [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def latency(series: Series, marks: Marks, path: Path) -> Path:
    fig, ax = _figure()
    for label, values, style in (
        ("p50", series.p50_ms, "-"),
        ("p95", series.p95_ms, "-"),
        ("p99", series.p99_ms, "-"),
        ("p99 of 202 acks", series.ack_p99_ms, "o"),
    ):
        xs, ys = _present(series.t_s, values)
        if xs:
            ax.plot(xs, ys, style, label=label, markersize=3)
    if any(v for v in series.p99_ms if v):
        ax.set_yscale("log")
    _decorate(ax, marks, title="Purchase latency (k6, per time bucket)", ylabel="ms")
    return _save(fig, path)


def throughput(series: Series, marks: Marks, path: Path) -> Path:
    fig, ax = _figure()
    if series.t_s:
        statuses = sorted(series.answers_per_s)
        ax.stackplot(
            series.t_s,
            [series.answers_per_s[s] for s in statuses],
            labels=[f"{s if s != '0' else 'no answer'}" for s in statuses],
            colors=[STATUS_COLOURS.get(s, "tab:brown") for s in statuses],
            step="post",
            alpha=0.8,
        )
    _decorate(ax, marks, title="Purchase answers per second by status", ylabel="answers/s")
    return _save(fig, path)


def stock(samples: Sequence[CounterSample], origin_ms: int, marks: Marks, path: Path) -> Path:
    fig, ax = _figure()
    t = [(s.t_ms - origin_ms) / 1000 for s in samples]
    ax.step(t, [s.remaining for s in samples], where="post", label="remaining", color="tab:blue")
    _decorate(ax, marks, title="Stock over time (Redis, sampled)", ylabel="units")
    return _save(fig, path)


def orders(samples: Sequence[CounterSample], origin_ms: int, marks: Marks, path: Path) -> Path:
    fig, ax = _figure()
    t = [(s.t_ms - origin_ms) / 1000 for s in samples]
    for label, values, colour in (
        ("pending", [s.pending for s in samples], "tab:orange"),
        ("confirmed", [s.confirmed for s in samples], "tab:green"),
        ("failed (released)", [s.failed for s in samples], "tab:red"),
        ("needs reconciliation", [s.needs_reconciliation for s in samples], "tab:purple"),
    ):
        ax.step(t, values, where="post", label=label, color=colour)
    _decorate(ax, marks, title="Order status over time (units)", ylabel="units")
    return _save(fig, path)


def all_plots(
    series: Series, samples: Sequence[CounterSample], marks: Marks, out_dir: Path
) -> list[Path]:
    origin = series.origin_ms
    return [
        latency(series, marks, out_dir / "latency.png"),
        throughput(series, marks, out_dir / "throughput.png"),
        stock(samples, origin, marks, out_dir / "stock.png"),
        orders(samples, origin, marks, out_dir / "orders.png"),
    ]
