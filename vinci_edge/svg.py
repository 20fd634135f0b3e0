"""Small inline-SVG charts for the HTML reports (profile, quant-report): stacked horizontal bars and a
line chart.

Hand-written so the runtime needs no plotting library; each function returns one `<svg>` element.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

PALETTE = (
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
    "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac",
)  # fmt: skip
FONT = 'font-family="sans-serif" font-size="12"'


def nice_ticks(top: float, count: int = 5) -> list[float]:
    """0 and round steps (1, 2 or 5 x 10^k) up to at least `top`."""
    if top <= 0:
        return [0.0, 1.0]
    raw = top / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(s * mag for s in (1, 2, 5, 10) if s * mag >= raw)
    n = math.ceil(top / step - 1e-9)
    return [i * step for i in range(n + 1)]


def _fmt(v: float) -> str:
    return f"{v:g}" if abs(v) >= 0.01 or v == 0 else f"{v:.1e}"


def _x_axis(ticks: list[float], x0: float, width: float, y: float, label: str) -> list[str]:
    top = ticks[-1]
    out = [f'<line x1="{x0}" y1="{y}" x2="{x0 + width}" y2="{y}" stroke="#444"/>']
    for t in ticks:
        x = x0 + width * t / top
        out.append(f'<line x1="{x:.1f}" y1="{y}" x2="{x:.1f}" y2="{y + 4}" stroke="#444"/>')
        out.append(f'<text x="{x:.1f}" y="{y + 16}" text-anchor="middle" {FONT}>{_fmt(t)}</text>')
    out.append(f'<text x="{x0 + width / 2}" y="{y + 32}" text-anchor="middle" {FONT}>{escape(label)}</text>')
    return out


def stacked_bars(rows: Sequence[tuple[str, Sequence[tuple[str, float]]]], unit: str, title: str = "") -> str:
    """One horizontal bar per row, split into named segments (same names share a colour)."""
    names = list(dict.fromkeys(name for _, segs in rows for name, _ in segs))
    colors = {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}
    label_w, bar_h, gap, plot_w = 160, 22, 10, 560
    top = max((sum(v for _, v in segs) for _, segs in rows), default=0.0)
    ticks = nice_ticks(top)
    legend_rows = math.ceil(len(names) / 4)
    height = 30 + len(rows) * (bar_h + gap) + 40 + legend_rows * 18
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + plot_w + 30}" height="{height}">']
    if title:
        out.append(f'<text x="4" y="16" {FONT} font-weight="bold">{escape(title)}</text>')
    y = 30
    for label, segs in rows:
        out.append(f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end" {FONT}>{escape(label)}</text>')
        x = float(label_w)
        for name, v in segs:
            w = plot_w * v / ticks[-1]
            out.append(
                f'<rect x="{x:.2f}" y="{y}" width="{w:.2f}" height="{bar_h}" fill="{colors[name]}">'
                f"<title>{escape(name)}: {v:.4g} {escape(unit)}</title></rect>"
            )
            x += w
        y += bar_h + gap
    out += _x_axis(ticks, label_w, plot_w, y, unit)
    y += 46
    for i, name in enumerate(names):
        lx, ly = label_w + (i % 4) * 140, y + (i // 4) * 18
        out.append(f'<rect x="{lx}" y="{ly - 10}" width="12" height="12" fill="{colors[name]}"/>')
        out.append(f'<text x="{lx + 16}" y="{ly}" {FONT}>{escape(name)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def line_chart(
    series: Sequence[tuple[str, Sequence[float]]],
    x_label: str,
    y_label: str,
    title: str = "",
    x_step: float = 1.0,
) -> str:
    """One polyline per series over x = x_step, 2 x_step, ...; a legend names them."""
    left, plot_w, plot_h, top_pad = 60, 600, 240, 30
    n = max((len(v) for _, v in series), default=0)
    y_ticks = nice_ticks(max((max(v) for _, v in series if v), default=0.0))
    x_ticks = nice_ticks(max(n * x_step, 1), count=8)
    height = top_pad + plot_h + 50 + 18 * len(series)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + plot_w + 30}" height="{height}">']
    if title:
        out.append(f'<text x="4" y="16" {FONT} font-weight="bold">{escape(title)}</text>')
    base = top_pad + plot_h
    for t in y_ticks:
        y = base - plot_h * t / y_ticks[-1]
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" {FONT}>{_fmt(t)}</text>')
    out.append(
        f'<text x="14" y="{top_pad + plot_h / 2}" transform="rotate(-90 14 {top_pad + plot_h / 2})" '
        f'text-anchor="middle" {FONT}>{escape(y_label)}</text>'
    )
    out += _x_axis(x_ticks, left, plot_w, base, x_label)
    for i, (name, values) in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        pts = " ".join(
            f"{left + plot_w * (k + 1) * x_step / x_ticks[-1]:.1f},{base - plot_h * v / y_ticks[-1]:.1f}"
            for k, v in enumerate(values)
        )
        out.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="1.5"/>')
        ly = base + 50 + 18 * i
        out.append(f'<rect x="{left}" y="{ly - 10}" width="12" height="12" fill="{color}"/>')
        out.append(f'<text x="{left + 16}" y="{ly}" {FONT}>{escape(name)}</text>')
    out.append("</svg>")
    return "\n".join(out)
