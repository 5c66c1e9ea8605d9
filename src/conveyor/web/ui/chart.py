"""A small server-rendered SVG chart of a connector's history, one bar per day with runs:
rows loaded (bars) and the average run duration (line), from the daily summaries
(``services/daily_stats.py``), which outlive the runs retention deletes."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from markupsafe import Markup

from conveyor.services.daily_stats import DayStats
from conveyor.web.ui.base import fmt_duration, fmt_num

HISTORY_DAYS = 30  # the connector page shows this many days
W, H = 720, 200
LEFT, RIGHT, TOP, BOTTOM = 52, 76, 12, 28


def _nice(value: float) -> float:
    """Round an axis maximum up to 1, 2 or 5 times a power of ten."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** (len(str(int(value))) - 1)
    for step in (1, 2, 5, 10):
        if value <= step * magnitude:
            return float(step * magnitude)
    return float(10 * magnitude)


def render(days: Sequence[DayStats]) -> Markup:
    """The chart for ``days`` (oldest first), or a note when there is nothing to draw."""
    if not days:
        return Markup('<p class="muted">No runs yet: the chart appears after the first run.</p>')
    max_rows = _nice(max(d.rows for d in days))
    max_secs = _nice(max((d.average_seconds or 0) for d in days))
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM
    slot = plot_w / len(days)
    bar_w = max(2.0, min(28.0, slot * 0.7))
    parts = [
        f'<svg class="chart" viewBox="0 0 {W} {H}" role="img" '
        f'aria-label="Rows loaded and average run duration on {len(days)} days" '
        'preserveAspectRatio="xMidYMid meet">',
    ]
    for frac in (0, 0.5, 1):
        y = TOP + plot_h * (1 - frac)
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(
            f'<text class="axis rows" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(_short(max_rows * frac))}</text>"
        )
        parts.append(
            f'<text class="axis secs" x="{W - RIGHT + 6}" y="{y + 4:.1f}">'
            f"{escape(fmt_duration(max_secs * frac) if frac else '0 s')}</text>"
        )
    line: list[str] = []
    for i, d in enumerate(days):
        cx = LEFT + slot * (i + 0.5)
        bar_h = plot_h * d.rows / max_rows
        failed = f", {d.failed} failed" if d.failed else ""
        tip = (
            f"{d.day.isoformat()} · {d.runs} run{'s' if d.runs != 1 else ''}{failed} · "
            f"{fmt_num(d.rows)} rows · {fmt_duration(d.average_seconds)} per run"
        )
        cls = "bar failed" if d.failed else "bar"
        parts.append(
            f'<rect class="{cls}" x="{cx - bar_w / 2:.1f}" y="{TOP + plot_h - bar_h:.1f}" '
            f'width="{bar_w:.1f}" height="{max(bar_h, 1):.1f}"><title>{escape(tip)}</title></rect>'
        )
        if d.average_seconds is not None:
            cy = TOP + plot_h * (1 - d.average_seconds / max_secs)
            line.append(f"{cx:.1f},{cy:.1f}")
            parts.append(
                f'<circle class="dot" cx="{cx:.1f}" cy="{cy:.1f}" r="3">'
                f"<title>{escape(tip)}</title></circle>"
            )
    if len(line) > 1:
        parts.append(f'<polyline class="line" points="{" ".join(line)}"/>')
    parts.append(
        f'<text class="axis" x="{LEFT}" y="{H - 8}">{escape(days[0].day.isoformat())}</text>'
        f'<text class="axis" x="{W - RIGHT}" y="{H - 8}" text-anchor="end">'
        f"{escape(days[-1].day.isoformat())}</text>"
    )
    parts.append("</svg>")
    legend = (
        '<p class="legend"><span class="key rows"></span> rows loaded (left axis) '
        '<span class="key secs"></span> average run duration (right axis), per day</p>'
    )
    return Markup("".join(parts) + legend)


def _short(value: float) -> str:
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:g}{unit}"
    return f"{value:g}"
