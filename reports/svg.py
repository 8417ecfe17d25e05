"""Inline SVG line charts, generated in Python: no scripts, fonts or network needed to view them.

Layout, top to bottom: the title (and a note, e.g. a bound far above the data, written instead of
drawn), the legend rows, a row for the fault bands' names, then the plot. The legend and the band
names are never inside the plot area. Charts of one page share their x domain (`share_x`), so a
fault's band sits at the same x in every chart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")
WIDTH = 660  # two charts side by side in a 1,400 px window
PLOT_HEIGHT = 170
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_BOTTOM = 64, 16, 40
TITLE_HEIGHT = 22
LEGEND_ROW = 15
BAND_LABEL_ROW = 16
CHAR_WIDTH = 6.5  # of an 11 px legend label, for wrapping


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
    shaded: list[tuple[float, float, str]] = field(default_factory=list)  # fault windows: start, end, name
    x_label: str = "seconds since load start"
    y_min: float | None = 0.0
    y_max: float | None = None
    chart_id: str = ""
    x_min: float | None = None  # the page's shared x domain (share_x), else the data's
    x_max: float | None = None
    note: str = ""  # written under the title, e.g. "declared bound 3,600 s (far above the data)"


def share_x(charts: list[Chart], start: float | None = 0.0) -> list[Chart]:
    """Give every chart the union of their x domains (data and bands, from `start` at the latest):
    one time axis per page."""
    xs = [x for c in charts for line in c.lines for x, y in line.points if y is not None]
    xs += [x for c in charts for s, e, _ in c.shaded for x in (s, e)]
    xs += [start] if xs and start is not None else []
    if xs:
        low, high = min(xs), max(xs)
        for chart in charts:
            chart.x_min, chart.x_max = low, high
    return charts


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


def _legend_layout(lines: list[Line]) -> list[tuple[float, int]]:
    """(x, row) of each legend entry, wrapping within the chart's width."""
    positions, x, row = [], float(MARGIN_LEFT), 0
    for line in lines:
        width = 24 + CHAR_WIDTH * len(line.name)
        if x + width > WIDTH - MARGIN_RIGHT and x > MARGIN_LEFT:
            x, row = float(MARGIN_LEFT), row + 1
        positions.append((x, row))
        x += width
    return positions


def render(chart: Chart) -> str:
    """The chart as an <svg> element (a figure with a legend and a data-chart attribute)."""
    xs = [x for line in chart.lines for x, y in line.points if y is not None]
    ys = [y for line in chart.lines for _, y in line.points if y is not None and math.isfinite(y)]
    title = escape(chart.title)
    if not xs:
        return (f'<svg class="chart empty" data-chart="{escape(chart.chart_id)}" viewBox="0 0 {WIDTH} 60" '
                f'width="{WIDTH}" height="60" role="img" aria-label="{title}"><text x="8" y="20" '
                f'class="chart-title">{title}</text><text x="8" y="44" class="note">no data</text></svg>')
    x_low = chart.x_min if chart.x_min is not None else min(xs + [s for s, _, _ in chart.shaded])
    x_high = chart.x_max if chart.x_max is not None else max(xs + [e for _, e, _ in chart.shaded])
    if x_high <= x_low:
        x_high = x_low + 1
    y_low = chart.y_min if chart.y_min is not None else min(ys)
    y_high = chart.y_max if chart.y_max is not None else max(ys)
    if y_high <= y_low:
        y_high = y_low + (abs(y_low) or 1.0)
    y_high *= 1.05 if chart.y_max is None else 1.0
    legend = _legend_layout(chart.lines)
    legend_rows = (max(row for _, row in legend) + 1) if legend else 0
    note_height = 14 if chart.note else 0
    plot_top = TITLE_HEIGHT + note_height + legend_rows * LEGEND_ROW + (BAND_LABEL_ROW if chart.shaded else 4)
    height = plot_top + PLOT_HEIGHT + MARGIN_BOTTOM
    plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    plot_h = PLOT_HEIGHT

    def sx(x: float) -> float:
        return MARGIN_LEFT + (min(max(x, x_low), x_high) - x_low) / (x_high - x_low) * plot_w

    def sy(y: float) -> float:
        clamped = min(max(y, y_low), y_high)
        return plot_top + plot_h - (clamped - y_low) / (y_high - y_low) * plot_h

    parts = [f'<svg class="chart" data-chart="{escape(chart.chart_id)}" viewBox="0 0 {WIDTH} {height}" '
             f'width="{WIDTH}" height="{height}" role="img" aria-label="{title}" xmlns="http://www.w3.org/2000/svg">',
             f'<text x="{MARGIN_LEFT}" y="16" class="chart-title">{title}</text>']
    if chart.note:
        parts.append(f'<text x="{MARGIN_LEFT}" y="{TITLE_HEIGHT + 10}" class="note chart-note">{escape(chart.note)}</text>')
    parts.append(f'<rect class="plot-area" x="{MARGIN_LEFT}" y="{plot_top}" width="{plot_w}" height="{plot_h}" '
                 'fill="none" stroke="none"/>')
    label_end = -math.inf
    for start, end, label in chart.shaded:
        x0, x1 = sx(start), sx(max(end, start + 0.5))
        parts.append(f'<rect class="fault" data-fault="{escape(label)}" x="{x0:.1f}" y="{plot_top}" '
                     f'width="{max(x1 - x0, 1.5):.1f}" height="{plot_h}"><title>{escape(label)}: '
                     f"{start:.1f}–{end:.1f} s</title></rect>")
        if x0 > label_end:  # a band's name above it, unless the previous name still runs there
            parts.append(f'<text class="fault-label" x="{x0:.1f}" y="{plot_top - 4}">{escape(label)}</text>')
            label_end = x0 + CHAR_WIDTH * len(label) + 8
    for tick in nice_ticks(y_low, y_high):
        y = sy(tick)
        parts.append(f'<line class="grid" x1="{MARGIN_LEFT}" x2="{WIDTH - MARGIN_RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
                     f'<text class="tick" x="{MARGIN_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_format(tick)}</text>')
    for tick in nice_ticks(x_low, x_high, 8):
        x = sx(tick)
        parts.append(f'<text class="tick" x="{x:.1f}" y="{plot_top + plot_h + 16}" '
                     f'text-anchor="middle">{_format(tick)}</text>')
    parts.append(f'<line class="axis" x1="{MARGIN_LEFT}" x2="{WIDTH - MARGIN_RIGHT}" y1="{plot_top + plot_h}" '
                 f'y2="{plot_top + plot_h}"/><line class="axis" x1="{MARGIN_LEFT}" x2="{MARGIN_LEFT}" '
                 f'y1="{plot_top}" y2="{plot_top + plot_h}"/>')
    parts.append(f'<text class="axis-label" x="{WIDTH / 2:.0f}" y="{height - 6}" text-anchor="middle">'
                 f'{escape(chart.x_label)}</text>')
    parts.append(f'<text class="axis-label" transform="translate(14 {plot_top + plot_h / 2:.0f}) rotate(-90)" '
                 f'text-anchor="middle">{escape(chart.y_label)}</text>')
    for n, (line, (legend_x, row)) in enumerate(zip(chart.lines, legend, strict=True)):
        color = line.color or PALETTE[n % len(PALETTE)]
        dash = ' stroke-dasharray="5 3"' if line.dashed else ""
        inside = [(x, y) for x, y in line.points if x_low <= x <= x_high]
        for segment in _segments(inside):
            if len(segment) == 1:
                x, y = segment[0]
                parts.append(f'<circle class="series" cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{color}"/>')
                continue
            coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in segment)
            parts.append(f'<polyline class="series" fill="none" stroke="{color}" stroke-width="1.6"{dash} '
                         f'points="{coords}"><title>{escape(line.name)}</title></polyline>')
        legend_y = TITLE_HEIGHT + note_height + row * LEGEND_ROW
        parts.append(f'<g class="legend-item"><rect x="{legend_x:.1f}" y="{legend_y}" width="10" height="8" '
                     f'fill="{color}"/><text class="legend" x="{legend_x + 14:.1f}" y="{legend_y + 8}">'
                     f"{escape(line.name)}</text></g>")
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
