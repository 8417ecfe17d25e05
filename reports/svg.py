"""Inline SVG line charts, generated in Python: no scripts, fonts or network needed to view them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")
WIDTH, HEIGHT = 760, 256
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 64, 16, 44, 40


@dataclass
class Line:
    name: str
    points: list[tuple[float, float | None]]  # None breaks the line
    color: str | None = None
    dashed: bool = False


@dataclass
class Chart:
    title: str
    y_label: str
    lines: list[Line] = field(default_factory=list)
    shaded: list[tuple[float, float, str]] = field(default_factory=list)  # fault windows
    x_label: str = "seconds since run start"
    y_min: float | None = 0.0
    y_max: float | None = None
    chart_id: str = ""


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    if not math.isfinite(low) or not math.isfinite(high) or high <= low:
        return [low]
    raw = (high - low) / max(1, count)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    ticks, value = [], first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    return ticks


def _format(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:.3g}"


def render(chart: Chart) -> str:
    """The chart as an <svg> element (a figure with a legend and a data-chart attribute)."""
    xs = [x for line in chart.lines for x, y in line.points if y is not None]
    ys = [y for line in chart.lines for _, y in line.points if y is not None and math.isfinite(y)]
    title = escape(chart.title)
    if not xs:
        return (f'<svg class="chart empty" data-chart="{escape(chart.chart_id)}" viewBox="0 0 {WIDTH} 60" '
                f'width="{WIDTH}" height="60" role="img" aria-label="{title}"><text x="8" y="20" '
                f'class="chart-title">{title}</text><text x="8" y="44" class="note">no data</text></svg>')
    x_low = min(xs + [s for s, _, _ in chart.shaded])
    x_high = max(xs + [e for _, e, _ in chart.shaded])
    if x_high <= x_low:
        x_high = x_low + 1
    y_low = chart.y_min if chart.y_min is not None else min(ys)
    y_high = chart.y_max if chart.y_max is not None else max(ys)
    if y_high <= y_low:
        y_high = y_low + (abs(y_low) or 1.0)
    y_high *= 1.05 if chart.y_max is None else 1.0
    plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    plot_h = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM

    def sx(x: float) -> float:
        return MARGIN_LEFT + (x - x_low) / (x_high - x_low) * plot_w

    def sy(y: float) -> float:
        clamped = min(max(y, y_low), y_high)
        return MARGIN_TOP + plot_h - (clamped - y_low) / (y_high - y_low) * plot_h

    parts = [f'<svg class="chart" data-chart="{escape(chart.chart_id)}" viewBox="0 0 {WIDTH} {HEIGHT}" '
             f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{title}" xmlns="http://www.w3.org/2000/svg">',
             f'<text x="{MARGIN_LEFT}" y="16" class="chart-title">{title}</text>']
    for start, end, label in chart.shaded:
        x0, x1 = sx(max(start, x_low)), sx(min(max(end, start + 0.5), x_high))
        parts.append(f'<rect class="fault" x="{x0:.1f}" y="{MARGIN_TOP}" width="{max(x1 - x0, 1.5):.1f}" '
                     f'height="{plot_h}"><title>{escape(label)}: {start:g}-{end:g} s</title></rect>')
    for tick in nice_ticks(y_low, y_high):
        y = sy(tick)
        parts.append(f'<line class="grid" x1="{MARGIN_LEFT}" x2="{WIDTH - MARGIN_RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
                     f'<text class="tick" x="{MARGIN_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_format(tick)}</text>')
    for tick in nice_ticks(x_low, x_high, 8):
        x = sx(tick)
        parts.append(f'<text class="tick" x="{x:.1f}" y="{HEIGHT - MARGIN_BOTTOM + 16}" '
                     f'text-anchor="middle">{_format(tick)}</text>')
    parts.append(f'<line class="axis" x1="{MARGIN_LEFT}" x2="{WIDTH - MARGIN_RIGHT}" y1="{MARGIN_TOP + plot_h}" '
                 f'y2="{MARGIN_TOP + plot_h}"/><line class="axis" x1="{MARGIN_LEFT}" x2="{MARGIN_LEFT}" '
                 f'y1="{MARGIN_TOP}" y2="{MARGIN_TOP + plot_h}"/>')
    parts.append(f'<text class="axis-label" x="{WIDTH / 2:.0f}" y="{HEIGHT - 6}" text-anchor="middle">'
                 f'{escape(chart.x_label)}</text>')
    parts.append(f'<text class="axis-label" transform="translate(14 {MARGIN_TOP + plot_h / 2:.0f}) rotate(-90)" '
                 f'text-anchor="middle">{escape(chart.y_label)}</text>')
    legend_x, legend_y = MARGIN_LEFT, 24
    for n, line in enumerate(chart.lines):
        color = line.color or PALETTE[n % len(PALETTE)]
        dash = ' stroke-dasharray="5 3"' if line.dashed else ""
        for segment in _segments(line.points):
            if len(segment) == 1:
                x, y = segment[0]
                parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{color}"/>')
                continue
            coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in segment)
            parts.append(f'<polyline class="series" fill="none" stroke="{color}" stroke-width="1.6"{dash} '
                         f'points="{coords}"><title>{escape(line.name)}</title></polyline>')
        width = 24 + 6.5 * len(line.name)
        if legend_x + width > WIDTH and legend_x > MARGIN_LEFT:  # wrap onto a second legend row
            legend_x, legend_y = MARGIN_LEFT, legend_y + 12
        parts.append(f'<rect x="{legend_x}" y="{legend_y}" width="10" height="8" fill="{color}"/>'
                     f'<text class="legend" x="{legend_x + 14}" y="{legend_y + 8}">{escape(line.name)}</text>')
        legend_x += width
    parts.append("</svg>")
    return "".join(parts)


def _segments(points: list[tuple[float, float | None]]) -> list[list[tuple[float, float]]]:
    segments, current = [], []
    for x, y in sorted(points, key=lambda p: p[0]):
        if y is None or not math.isfinite(y):
            if current:
                segments.append(current)
            current = []
        else:
            current.append((x, y))
    if current:
        segments.append(current)
    return segments
