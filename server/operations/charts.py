"""A PNG chart of an operations summary: latency percentiles and error rate over the window.

Rendered without a display through matplotlib's Agg canvas (no pyplot, no global figure state); matplotlib is
imported only when a chart is asked for.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime

from server.operations.summary import OperationsSummary

WIDTH_PX = 800
HEIGHT_PX = 400
_DPI = 100


def render_chart(summary: OperationsSummary) -> bytes:
    """PNG bytes, ``WIDTH_PX`` × ``HEIGHT_PX``: p50/p95/p99 latency (ms, left axis) and error rate (%, right
    axis) per time bucket of ``summary.totals.series``.

    Raises:
        ImportError: matplotlib is not installed (simple mode).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    points = summary.totals.series or []
    times = [datetime.fromtimestamp(p.t, UTC) for p in points]
    figure = Figure(figsize=(WIDTH_PX / _DPI, HEIGHT_PX / _DPI), dpi=_DPI)
    FigureCanvasAgg(figure)
    axis = figure.add_subplot()
    for name, colour in (("latency_p50_ms", "tab:green"), ("latency_p95_ms", "tab:orange"),
                         ("latency_p99_ms", "tab:red")):
        values = [getattr(p, name) for p in points]
        axis.plot(times, [float("nan") if v is None else v for v in values], marker=".", color=colour,
                  label=name.removeprefix("latency_").removesuffix("_ms"))
    axis.set_ylabel("latency (ms)")
    axis.set_title(f"{summary.window} by {summary.step_s} s, {summary.totals.calls} calls ({summary.percentiles})",
                   fontsize=9)
    errors = axis.twinx()
    errors.bar(times, [p.error_rate * 100 for p in points], width=summary.step_s / 86400 * 0.8, alpha=0.25,
               color="tab:gray", label="error rate")
    errors.set_ylabel("error rate (%)")
    errors.set_ylim(0, max(5.0, max((p.error_rate * 100 for p in points), default=0) * 1.2))
    axis.set_zorder(errors.get_zorder() + 1)
    axis.patch.set_visible(False)
    handles = axis.get_legend_handles_labels()[0] + errors.get_legend_handles_labels()[0]
    axis.legend(handles, [h.get_label() for h in handles], loc="upper left", fontsize=8)
    figure.autofmt_xdate()
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=_DPI)
    return out.getvalue()
