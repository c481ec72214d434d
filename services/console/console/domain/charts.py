"""Charts as inline SVG built on the server: no JavaScript, no CDN, and no style attributes (the page's
Content-Security-Policy allows only the console's own stylesheet). Every label is escaped."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

from markupsafe import Markup

PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563")


def _e(s: object) -> str:
    return escape(str(s), quote=True)


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if not 1e-300 < abs(v) < 1e15:
        return f"{v:.3g}"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}".rstrip("0").rstrip(".")
    return f"{v:.3g}"


# Score values are any double (1e308, 1e-320): the axis is clamped to where its ticks stay finite and distinct.
_AXIS_LIMIT = 1e300
_AXIS_MIN_SPAN = 1e-300


def _nice_range(lo: float, hi: float) -> tuple[float, float, list[float]]:
    lo, hi = (min(max(v, -_AXIS_LIMIT), _AXIS_LIMIT) for v in (lo, hi))
    if not hi - lo > _AXIS_MIN_SPAN:  # equal, or NaN
        if not abs(lo) > _AXIS_MIN_SPAN:
            lo, hi = 0.0, 1.0
        else:
            delta = max(1.0, abs(lo) / 10)
            lo, hi = lo - delta, hi + delta
    span = hi - lo
    step = 10 ** math.floor(math.log10(span / 4))
    for m in (1, 2, 2.5, 5, 10):
        if span / (step * m) <= 5:
            step *= m
            break
    start = math.floor(lo / step) * step
    end = math.ceil(hi / step) * step
    ticks = []
    t = start
    while t <= end + step / 1e6:
        ticks.append(round(t, 10))
        t += step
    return start, end, ticks


def _svg(width: int, height: int, body: list[str], title: str) -> Markup:
    head = (f'<svg class="chart" viewBox="0 0 {width} {height}" width="100%" role="img" '
            f'aria-label="{_e(title)}" xmlns="http://www.w3.org/2000/svg"><title>{_e(title)}</title>')
    return Markup(head + "".join(body) + "</svg>")


def empty(title: str, message: str = "No data yet") -> Markup:
    return _svg(600, 80, [f'<text x="300" y="45" text-anchor="middle" class="muted">{_e(message)}</text>'], title)


def line_chart(
    series: Sequence[tuple[str, Sequence[tuple[str, float | None]]]], *, title: str, width: int = 720,
    height: int = 260, y_min: float | None = None, y_max: float | None = None,
) -> Markup:
    """Lines over shared x labels (time buckets). ``series``: (name, [(x label, y or None)])."""
    xs: list[str] = []
    for _, pts in series:
        for x, _y in pts:
            if x not in xs:
                xs.append(x)
    ys = [y for _, pts in series for _, y in pts if y is not None]
    if not xs or not ys:
        return empty(title)
    xs.sort()
    lo, hi, ticks = _nice_range(min(ys) if y_min is None else y_min, max(ys) if y_max is None else y_max)
    left, right, top, bottom = 48, 12, 16, 48 + 16 * ((len(series) + 2) // 3)
    pw, ph = width - left - right, height - top - bottom
    def px(i: int) -> float:
        return left + (pw * i / (len(xs) - 1) if len(xs) > 1 else pw / 2)

    def py(v: float) -> float:
        return top + ph - (v - lo) / (hi - lo) * ph
    body = []
    for t in ticks:
        body.append(f'<line x1="{left}" x2="{width - right}" y1="{py(t):.1f}" y2="{py(t):.1f}" class="grid"/>'
                    f'<text x="{left - 6}" y="{py(t) + 4:.1f}" text-anchor="end" class="tick">{_e(_fmt(t))}</text>')
    every = max(1, math.ceil(len(xs) / 8))
    for i, x in enumerate(xs):
        if i % every == 0:
            body.append(f'<text x="{px(i):.1f}" y="{top + ph + 16}" text-anchor="middle" class="tick">'
                        f'{_e(x)}</text>')
    for si, (name, pts) in enumerate(series):
        color = PALETTE[si % len(PALETTE)]
        lookup = {x: y for x, y in pts if y is not None}
        coords = [(px(i), py(lookup[x])) for i, x in enumerate(xs) if x in lookup]
        if len(coords) > 1:
            d = " ".join(f"{'M' if j == 0 else 'L'}{cx:.1f},{cy:.1f}" for j, (cx, cy) in enumerate(coords))
            body.append(f'<path d="{d}" fill="none" stroke="{color}" stroke-width="2"/>')
        for (cx, cy), x in zip(coords, [x for x in xs if x in lookup], strict=True):
            body.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="3" fill="{color}">'
                        f'<title>{_e(name)} {_e(x)}: {_e(_fmt(lookup[x]))}</title></circle>')
        lx, ly = left + (si % 3) * (pw / 3), top + ph + 34 + 16 * (si // 3)
        body.append(f'<rect x="{lx:.1f}" y="{ly - 9:.1f}" width="10" height="10" fill="{color}"/>'
                    f'<text x="{lx + 14:.1f}" y="{ly:.1f}" class="legend">{_e(name)}</text>')
    return _svg(width, height, body, title)


def bar_chart(bars: Sequence[tuple[str, float]], *, title: str, width: int = 720, height: int = 240,
              color: str = PALETTE[0]) -> Markup:
    """Vertical bars (a distribution: category counts or a histogram)."""
    if not bars:
        return empty(title)
    _, hi, ticks = _nice_range(0, max(v for _, v in bars) or 1)
    left, right, top, bottom = 48, 12, 16, 40
    pw, ph = width - left - right, height - top - bottom
    slot = pw / len(bars)
    body = []
    for t in ticks:
        y = top + ph - t / hi * ph
        body.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                    f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">{_e(_fmt(t))}</text>')
    for i, (label, v) in enumerate(bars):
        h = v / hi * ph
        x = left + i * slot + slot * 0.15
        body.append(f'<rect x="{x:.1f}" y="{top + ph - h:.1f}" width="{slot * 0.7:.1f}" height="{h:.1f}" '
                    f'fill="{color}"><title>{_e(label)}: {_e(_fmt(v))}</title></rect>')
        body.append(f'<text x="{x + slot * 0.35:.1f}" y="{top + ph + 16}" text-anchor="middle" class="tick">'
                    f'{_e(str(label)[:14])}</text>')
    return _svg(width, height, body, title)


def interval_chart(rows: Sequence[tuple[str, float | None, float | None, float | None, int]], *, title: str,
                   width: int = 720, x_min: float | None = None, x_max: float | None = None) -> Markup:
    """A forest plot: per row a mean with its confidence interval. rows: (label, mean, low, high, color index)."""
    vals = [v for _, m, lo, hi, _ in rows for v in (m, lo, hi) if v is not None]
    if not vals:
        return empty(title)
    lo_v, hi_v, ticks = _nice_range(min(vals) if x_min is None else x_min, max(vals) if x_max is None else x_max)
    left, right, top, row_h = 220, 16, 12, 26
    height = top + row_h * len(rows) + 28
    pw = width - left - right

    def px(v: float) -> float:
        return left + (v - lo_v) / (hi_v - lo_v) * pw
    body = []
    for t in ticks:
        body.append(f'<line x1="{px(t):.1f}" x2="{px(t):.1f}" y1="{top}" y2="{height - 24}" class="grid"/>'
                    f'<text x="{px(t):.1f}" y="{height - 8}" text-anchor="middle" class="tick">{_e(_fmt(t))}</text>')
    for i, (label, mean, low, high, ci) in enumerate(rows):
        y = top + row_h * i + row_h / 2
        color = PALETTE[ci % len(PALETTE)]
        body.append(f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end" class="legend">{_e(label[:34])}</text>')
        if low is not None and high is not None:
            body.append(f'<line x1="{px(low):.1f}" x2="{px(high):.1f}" y1="{y:.1f}" y2="{y:.1f}" '
                        f'stroke="{color}" stroke-width="2"/>'
                        f'<line x1="{px(low):.1f}" x2="{px(low):.1f}" y1="{y - 5:.1f}" y2="{y + 5:.1f}" '
                        f'stroke="{color}"/><line x1="{px(high):.1f}" x2="{px(high):.1f}" y1="{y - 5:.1f}" '
                        f'y2="{y + 5:.1f}" stroke="{color}"/>')
        if mean is not None:
            tip = f"{label}: {_fmt(mean)}" + (f" [{_fmt(low)}, {_fmt(high)}]" if low is not None and high is not None
                                               else "")
            body.append(f'<circle cx="{px(mean):.1f}" cy="{y:.1f}" r="5" fill="{color}"><title>{_e(tip)}</title>'
                        f'</circle>')
    return _svg(width, height, body, title)


def heatmap(matrix: Sequence[Sequence[float]], rows: Sequence[str], cols: Sequence[str], *, title: str,
            row_title: str = "", col_title: str = "") -> Markup:
    """A confusion matrix: cell shade by count, the count written in each cell."""
    if not matrix or not rows or not cols:
        return empty(title)
    cell, left, top = 56, 130, 56
    width, height = left + cell * len(cols) + 16, top + cell * len(rows) + 16
    peak = max((v for r in matrix for v in r), default=0) or 1
    body = [f'<text x="{left + cell * len(cols) / 2:.1f}" y="14" text-anchor="middle" class="legend">'
            f'{_e(col_title)}</text>',
            f'<text x="12" y="{top + cell * len(rows) / 2:.1f}" class="legend" '
            f'transform="rotate(-90 12 {top + cell * len(rows) / 2:.1f})" text-anchor="middle">{_e(row_title)}</text>']
    for j, c in enumerate(cols):
        body.append(f'<text x="{left + cell * j + cell / 2:.1f}" y="{top - 10}" text-anchor="middle" class="tick">'
                    f'{_e(str(c)[:10])}</text>')
    for i, r in enumerate(rows):
        body.append(f'<text x="{left - 8}" y="{top + cell * i + cell / 2 + 4:.1f}" text-anchor="end" class="tick">'
                    f'{_e(str(r)[:16])}</text>')
        for j, _c in enumerate(cols):
            v = matrix[i][j] if j < len(matrix[i]) else 0
            shade = 0.08 + 0.85 * (v / peak)
            diag = " diag" if i == j else ""
            body.append(f'<rect x="{left + cell * j}" y="{top + cell * i}" width="{cell - 2}" height="{cell - 2}" '
                        f'fill="#2563eb" fill-opacity="{shade:.2f}" class="cell{diag}"/>'
                        f'<text x="{left + cell * j + cell / 2 - 1:.1f}" y="{top + cell * i + cell / 2 + 4:.1f}" '
                        f'text-anchor="middle" class="{"cellv-dark" if shade > 0.5 else "cellv"}">{_e(_fmt(v))}'
                        f'</text>')
    return _svg(width, height, body, title)


def stacked_bar(parts: Sequence[tuple[str, float]], *, title: str, width: int = 320, height: int = 14) -> Markup:
    """A one-line progress bar split by status (completed, in progress, skipped, ...)."""
    total = sum(v for _, v in parts)
    colors = {"completed": "#16a34a", "in_progress": "#2563eb", "pending": "#e5e7eb", "skipped": "#d97706",
              "flagged": "#dc2626"}
    if total <= 0:
        return _svg(width, height, [f'<rect width="{width}" height="{height}" rx="3" fill="#e5e7eb"/>'], title)
    body = []
    x = 0.0
    for label, v in parts:
        w = width * v / total
        if w > 0:
            body.append(f'<rect x="{x:.1f}" width="{w:.1f}" height="{height}" fill="{colors.get(label, "#9ca3af")}">'
                        f'<title>{_e(label.replace("_", " "))}: {_e(_fmt(v))}</title></rect>')
        x += w
    return _svg(width, height, body, title)
