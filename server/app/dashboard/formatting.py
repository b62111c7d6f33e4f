"""Jinja2 filters for the dashboard's figures: times in UTC, milliseconds, dollars, percentages."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def when(ts: float | None) -> str:
    """Unix seconds as ``YYYY-MM-DD HH:MM:SS`` UTC (``—`` for none)."""
    return "—" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


def ms(value: float | None) -> str:
    """Milliseconds, or seconds from 10 s up."""
    if value is None:
        return "—"
    return f"{value / 1000:.1f} s" if value >= 10_000 else f"{value:.1f} ms" if value < 100 else f"{value:.0f} ms"


def usd(value: float | None) -> str:
    """US dollars, with enough digits for fractions of a cent."""
    if value is None:
        return "—"
    if value >= 1 or value == 0:
        return f"${value:,.2f}"
    if value >= 0.01:
        return f"${value:.4f}"
    return f"${value:.8f}".rstrip("0") if value >= 1e-8 else f"${value:.1e}"


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f} %"


def seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f} s" if value >= 10 else f"{value:.1f} s"


FILTERS: dict[str, Callable[[Any], str]] = {"when": when, "ms": ms, "usd": usd, "percent": percent,
                                            "seconds": seconds}
