"""Small inline SVG charts for the HTML report: stacked bars, lines with a band, horizontal bars.

Pure functions from numbers to SVG text (no plotting library: three chart shapes do not justify
a dependency). The SVG is also well-formed XML, and every text is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

WIDTH, HEIGHT = 960, 260
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 16, 40  # plot margins: y labels left, x labels below
FONT = 'font-family="DejaVu Sans, Verdana, sans-serif" font-size="11"'


@dataclass(frozen=True)
class Series:
    label: str
    color: str
    values: Sequence[float | None]  # None: no data (a gap in a line, nothing in a bar)
    dashed: bool = False


def nice_ticks(top: float, count: int = 5) -> list[float]:
    """0 and round steps (1, 2, 2.5, 5 × 10ⁿ) up to at least ``top``."""
    if top <= 0:
        return [0.0, 1.0]
    raw = top / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    n = math.ceil(top / step - 1e-9)
    return [round(i * step, 10) for i in range(n + 1)]


def fmt(value: float, unit: str = "") -> str:
    """Short axis text: 1.2k, 3.4M, 0.25 s, 850 ms."""
    if unit == "s":
        return f"{value * 1000:.0f} ms" if 0 < value < 1 else f"{value:g} s"
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= div:
            return f"{value / div:.3g}{suffix}"
    return f"{value:g}"


class _Frame:
    """Scales and axes shared by the charts over ``n`` x slots."""

    def __init__(self, n: int, top: float, unit: str, height: int = HEIGHT) -> None:
        self.n = max(n, 1)
        self.height = height
        self.ticks = nice_ticks(top)
        self.top = self.ticks[-1]
        self.unit = unit
        self.plot_w = WIDTH - LEFT - RIGHT
        self.plot_h = height - TOP - BOTTOM
        self.slot = self.plot_w / self.n

    def x(self, i: float) -> float:
        return LEFT + i * self.slot

    def y(self, v: float) -> float:
        return TOP + self.plot_h * (1 - min(v, self.top) / self.top)

    def axes(self, x_labels: Sequence[str]) -> list[str]:
        out = []
        for t in self.ticks:
            y = self.y(t)
            out.append(
                f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" '
                'stroke="#e3e3e3" stroke-width="1"/>'
            )
            out.append(
                f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" {FONT} fill="#555">'
                f"{escape(fmt(t, self.unit))}</text>"
            )
        every = max(1, math.ceil(len(x_labels) / 12))  # at most ~12 labels, never overlapping
        for i, label in enumerate(x_labels):
            if label and i % every == 0:
                x = self.x(i + 0.5)
                out.append(
                    f'<text x="{x:.1f}" y="{self.height - BOTTOM + 16}" text-anchor="middle" '
                    f'{FONT} fill="#555">{escape(label)}</text>'
                )
        out.append(
            f'<line x1="{LEFT}" y1="{self.y(0):.1f}" x2="{WIDTH - RIGHT}" y2="{self.y(0):.1f}" '
            'stroke="#999" stroke-width="1"/>'
        )
        return out


def _svg(body: list[str], title: str, height: int = HEIGHT) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" '
        f'width="100%" role="img" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title>" + "".join(body) + "</svg>"
    )


def legend(series: Sequence[Series], extra: Sequence[tuple[str, str]] = ()) -> str:
    """An HTML legend (wraps with the page, unlike SVG text)."""
    items = [(s.label, s.color) for s in series] + list(extra)
    return (
        '<p class="legend">'
        + "".join(
            f'<span><i style="background:{escape(color)}"></i>{escape(label)}</span>'
            for label, color in items
        )
        + "</p>"
    )


def stacked_bars(series: Sequence[Series], x_labels: Sequence[str], title: str) -> str:
    """One bar per x slot, the series stacked bottom-up in the given order."""
    n = len(x_labels)
    totals = [sum(s.values[i] or 0 for s in series) for i in range(n)]
    f = _Frame(n, max(totals, default=0), "")
    body = f.axes(x_labels)
    gap = min(2.0, f.slot * 0.2)
    for i in range(n):
        base = 0.0
        for s in series:
            v = s.values[i] or 0
            if v <= 0:
                continue
            y0, y1 = f.y(base), f.y(base + v)
            body.append(
                f'<rect x="{f.x(i) + gap / 2:.1f}" y="{y1:.1f}" width="{f.slot - gap:.1f}" '
                f'height="{max(y0 - y1, 0.5):.1f}" fill="{s.color}">'
                f"<title>{escape(x_labels[i])}: {escape(s.label)} {v:g}</title></rect>"
            )
            base += v
    return _svg(body, title)


def lines(
    series: Sequence[Series],
    x_labels: Sequence[str],
    title: str,
    unit: str = "",
    band: tuple[Sequence[float | None], Sequence[float | None], str] | None = None,
    marks: Sequence[tuple[int, float]] = (),
) -> str:
    """Lines through slot centres (gaps where a value is None), an optional shaded band
    (low, high, colour) and red ring marks at (slot, value)."""
    n = len(x_labels)
    values = [v for s in series for v in s.values if v is not None]
    if band:
        values += [v for v in band[1] if v is not None]
    f = _Frame(n, max(values, default=0), unit)
    body = f.axes(x_labels)
    if band:
        low, high, color = band
        for i in range(n):  # one shaded slot per x: a band with gaps stays honest
            lo, hi = low[i], high[i]
            if lo is None or hi is None:
                continue
            body.append(
                f'<rect x="{f.x(i):.1f}" y="{f.y(hi):.1f}" width="{f.slot:.1f}" '
                f'height="{max(f.y(lo) - f.y(hi), 0.5):.1f}" fill="{color}" fill-opacity="0.35"/>'
            )
    for s in series:
        runs: list[list[str]] = [[]]
        for i, v in enumerate(s.values):
            if v is None:
                runs.append([])
            else:
                runs[-1].append(f"{f.x(i + 0.5):.1f},{f.y(v):.1f}")
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        for run in runs:
            if len(run) == 1:
                x, y = run[0].split(",")
                body.append(f'<circle cx="{x}" cy="{y}" r="2" fill="{s.color}"/>')
            elif run:
                body.append(
                    f'<polyline points="{" ".join(run)}" fill="none" stroke="{s.color}" '
                    f'stroke-width="2"{dash}/>'
                )
    for i, v in marks:
        body.append(
            f'<circle cx="{f.x(i + 0.5):.1f}" cy="{f.y(v):.1f}" r="6" fill="none" '
            f'stroke="#d62728" stroke-width="2"><title>{escape(x_labels[i])}: '
            f"{escape(fmt(v, unit))} outside the band</title></circle>"
        )
    return _svg(body, title)


def hbars(rows: Sequence[tuple[str, Sequence[float]]], colors: Sequence[str], title: str) -> str:
    """One horizontal stacked bar per row (label, values in ``colors`` order)."""
    row_h, label_w = 22, 180
    height = TOP + row_h * max(len(rows), 1) + 24
    top = max((sum(v) for _, v in rows), default=0)
    ticks = nice_ticks(top)
    scale = (WIDTH - label_w - RIGHT) / ticks[-1]
    body = []
    for t in ticks:
        x = label_w + t * scale
        body.append(
            f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{height - 24}" stroke="#e3e3e3"/>'
            f'<text x="{x:.1f}" y="{height - 8}" text-anchor="middle" {FONT} fill="#555">'
            f"{escape(fmt(t))}</text>"
        )
    for r, (label, values) in enumerate(rows):
        y = TOP + r * row_h
        short = label if len(label) <= 28 else label[:27] + "…"
        body.append(
            f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end" {FONT} fill="#222">'
            f"{escape(short)}</text>"
        )
        x = float(label_w)
        for v, color in zip(values, colors, strict=True):
            if v > 0:
                body.append(
                    f'<rect x="{x:.1f}" y="{y + 3}" width="{max(v * scale, 0.5):.1f}" '
                    f'height="{row_h - 6}" fill="{color}"><title>{escape(label)}: '
                    f"{v:,.0f}</title></rect>"
                )
                x += v * scale
    return _svg(body, title, height)
