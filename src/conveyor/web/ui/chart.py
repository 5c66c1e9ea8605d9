"""A small server-rendered SVG chart: rows loaded (bars) and duration (line) per run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape

from markupsafe import Markup

from conveyor.web.ui.base import fmt_dt, fmt_duration, fmt_num

W, H = 720, 200
LEFT, RIGHT, TOP, BOTTOM = 52, 76, 12, 28


@dataclass(frozen=True)
class Point:
    run_id: int
    at: datetime | None
    rows: int | None
    seconds: float | None
    status: str


def _nice(value: float) -> float:
    """Round an axis maximum up to 1, 2 or 5 times a power of ten."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** (len(str(int(value))) - 1)
    for step in (1, 2, 5, 10):
        if value <= step * magnitude:
            return float(step * magnitude)
    return float(10 * magnitude)


def render(points: Sequence[Point]) -> Markup:
    """The chart for ``points`` (oldest first), or a note when there is nothing to draw."""
    if not points:
        return Markup('<p class="muted">No runs yet: the chart appears after the first run.</p>')
    max_rows = _nice(max((p.rows or 0) for p in points))
    max_secs = _nice(max((p.seconds or 0) for p in points))
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM
    slot = plot_w / len(points)
    bar_w = max(2.0, min(28.0, slot * 0.7))
    parts = [
        f'<svg class="chart" viewBox="0 0 {W} {H}" role="img" '
        f'aria-label="Rows loaded and duration of the last {len(points)} runs" '
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
    for i, p in enumerate(points):
        cx = LEFT + slot * (i + 0.5)
        rows = p.rows or 0
        bar_h = plot_h * rows / max_rows
        tip = (
            f"Run {p.run_id} · {fmt_dt(p.at)} · {p.status} · "
            f"{fmt_num(p.rows)} rows · {fmt_duration(p.seconds)}"
        )
        cls = "bar failed" if p.status in ("failed", "crashed", "cancelled") else "bar"
        parts.append(
            f'<rect class="{cls}" x="{cx - bar_w / 2:.1f}" y="{TOP + plot_h - bar_h:.1f}" '
            f'width="{bar_w:.1f}" height="{max(bar_h, 1):.1f}"><title>{escape(tip)}</title></rect>'
        )
        if p.seconds is not None:
            cy = TOP + plot_h * (1 - p.seconds / max_secs)
            line.append(f"{cx:.1f},{cy:.1f}")
            parts.append(
                f'<circle class="dot" cx="{cx:.1f}" cy="{cy:.1f}" r="3">'
                f"<title>{escape(tip)}</title></circle>"
            )
    if len(line) > 1:
        parts.append(f'<polyline class="line" points="{" ".join(line)}"/>')
    first, last = points[0].at, points[-1].at
    if first and last:
        parts.append(
            f'<text class="axis" x="{LEFT}" y="{H - 8}">{escape(fmt_dt(first))}</text>'
            f'<text class="axis" x="{W - RIGHT}" y="{H - 8}" text-anchor="end">'
            f"{escape(fmt_dt(last))}</text>"
        )
    parts.append("</svg>")
    legend = (
        '<p class="legend"><span class="key rows"></span> rows loaded (left axis) '
        '<span class="key secs"></span> duration (right axis)</p>'
    )
    return Markup("".join(parts) + legend)


def _short(value: float) -> str:
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:g}{unit}"
    return f"{value:g}"
