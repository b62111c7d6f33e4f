"""Time-series charts as server-rendered SVG geometry (the templates draw it; no chart library, no script).

A :class:`Chart` holds everything ``templates/_macros.html`` needs in SVG user units: the plot area, a bar
per time bucket or a polyline through the buckets that have a value, four horizontal grid lines with their
labels, and the first/middle/last time labels.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

WIDTH, HEIGHT = 560, 200
LEFT, RIGHT, TOP, BOTTOM = 64, 12, 14, 26


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    title: str


@dataclass(frozen=True, slots=True)
class Tick:
    position: float
    label: str


@dataclass(frozen=True)
class Chart:
    """One chart: ``kind`` ``bars`` or ``line``; ``empty`` when no bucket has a value above zero."""

    key: str
    title: str
    kind: str
    total: str
    bars: list[Bar] = field(default_factory=list)
    points: str = ""
    markers: list[Bar] = field(default_factory=list)
    y_ticks: list[Tick] = field(default_factory=list)
    x_ticks: list[Tick] = field(default_factory=list)
    empty: bool = True
    width: int = WIDTH
    height: int = HEIGHT
    plot_left: int = LEFT
    plot_right: int = WIDTH - RIGHT
    plot_top: int = TOP
    plot_bottom: int = HEIGHT - BOTTOM


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 × 10^k at or above ``value`` (1 for non-positive values)."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude * (1 + 1e-9):
            return step * magnitude
    return 10 * magnitude


def time_chart(key: str, title: str, times: Sequence[float], values: Sequence[float | None], *, kind: str,
               step_s: float, total: str, label: Callable[[float], str]) -> Chart:
    """A chart of ``values`` over bucket start ``times`` (Unix seconds, ``step_s`` apart).

    Args:
        kind: ``bars`` (counts, cost per bucket) or ``line`` (rates and latencies; gaps where a bucket is ``None``).
        label: formats a y-axis value.
    """
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top = nice_ceiling(max((v for v in values if v is not None), default=0.0))
    slot = plot_w / max(len(values), 1)

    def y(value: float) -> float:
        return round(TOP + plot_h * (1 - value / top), 2)

    bars, markers, points = [], [], []
    for index, (t, value) in enumerate(zip(times, values)):
        if value is None:
            continue
        when = _clock_label(t, step_s)
        if kind == "bars":
            if value > 0:
                bars.append(Bar(round(LEFT + index * slot + slot * 0.1, 2), y(value), round(slot * 0.8, 2),
                                round(TOP + plot_h - y(value), 2), f"{when}: {label(value)}"))
        else:
            cx = round(LEFT + (index + 0.5) * slot, 2)
            points.append(f"{cx},{y(value)}")
            markers.append(Bar(cx, y(value), 0, 0, f"{when}: {label(value)}"))
    y_ticks = [Tick(y(top * i / 4), label(top * i / 4)) for i in range(5)]
    x_ticks = []
    if times:
        for index in sorted({0, len(times) // 2, len(times) - 1}):
            x_ticks.append(Tick(round(LEFT + (index + 0.5) * slot, 2), _clock_label(times[index], step_s)))
    empty = not any(v for v in values if v is not None)
    return Chart(key=key, title=title, kind=kind, total=total, bars=bars, points=" ".join(points), markers=markers,
                 y_ticks=y_ticks, x_ticks=x_ticks, empty=empty)


def _clock_label(t: float, step_s: float) -> str:
    """UTC ``HH:MM`` for buckets under a day apart, ``MM-DD HH:00`` otherwise."""
    fmt = "%H:%M" if step_s < 3 * 3600 else "%m-%d %H:00"
    return time.strftime(fmt, time.gmtime(t))
