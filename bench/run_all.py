"""Run every bench and write one Markdown table of their headline figures and a PNG chart of them against
their goals.

    python bench/run_all.py [--quick] [--out DIR] [--only NAME ...]

Each bench runs as its own process (``python bench/<name>.py … --json``), one after the other; the load average
is read just before each starts and printed in its row. Written into ``--out`` (default ``bench-results/``):
``results.md`` (goal, measured figure, baseline, ratio, met or not, load average before the bench), ``ratios.png``
(each figure as the share of its goal it uses: at most 1.0 meets the goal), and each bench's full output as
``<name>.log``. ``--quick`` runs shorter series (under 10 minutes on the project's 2-core machine); the figures
it gives are noisier than a full run's. Not part of the test suite: benches are never run in CI.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from harness import BENCH, REPO, Figure, load_average, ours_version, versions

# name -> (quick arguments, full arguments)
BENCHES: dict[str, tuple[list[str], list[str]]] = {
    "overhead": (["--calls", "200"], ["--calls", "1000"]),
    "pool": (["--calls", "160", "--rounds", "2"], ["--calls", "500", "--rounds", "4"]),
    "http_load": (["--clients", "20", "--duration", "8", "--warmup", "2", "--windows", "2", "--workers", "2"],
                  ["--clients", "50", "--duration", "30", "--warmup", "5", "--windows", "2", "--workers", "5"]),
    "startup": (["--runs", "2"], ["--runs", "20"]),  # 3 rounds took 397 s at load 10
    "consensus": (["--calls", "15"], ["--calls", "50"]),
    "knowledge": (["--patterns", "10000", "--calls", "300"], ["--patterns", "10000", "--calls", "1000"]),
    "operations": (["--calls", "20000", "--records", "200000", "--summaries", "10"], []),
    "workflows": (["--steps", "100", "--runs", "3"], ["--steps", "200", "--runs", "5"]),
    "agents": (["--calls", "50"], ["--calls", "200"]),
}
NO_JSON = {"startup"}  # bench/startup.py is the first-answer issue's: its text output is read instead


def startup_figures(text: str) -> list[Figure]:
    """The first-answer issue's targets from bench/startup.py's report (the row of ``ours`` in each section)."""
    figures, section = [], ""
    for line in text.splitlines():
        # The report before the first-answer issue (start -> tools/list only): "full  10  median p10 p90  × hello …".
        if old := re.match(r"(simple|full)\s+\d+\s+([\d.]+)\s+[\d.]+\s+[\d.]+\s+([\d.]+)", line):
            median, ratio = float(old.group(2)), float(old.group(3))
            figures.append(Figure("startup", f"start -> tools/list, {old.group(1)} / hello", median, median / ratio,
                                  "ms", "<=", 1.15 if old.group(1) == "simple" else 1.3, on_ratio=True))
            continue
        if not line.startswith("  "):
            section = line
            continue
        match = re.match(r"\s+ours\s+([\d.]+)", line)
        if not match:
            continue
        median = float(match.group(1))
        if section.startswith("start -> tools/list") and (m := re.search(r"x hello\s+([\d.]+)\s+x hello\+sdk\s+([\d.]+)", line)):
            figures.append(Figure("startup", "start -> tools/list, ours / hello", median, median / float(m.group(1)),
                                  "ms", "<=", 1.3, on_ratio=True))
            figures.append(Figure("startup", "start -> tools/list, ours / hello+sdk", median,
                                  median / float(m.group(2)), "ms", "<=", 1.0, on_ratio=True))
        elif (kind := re.search(r"first answer through the (\w+)-kind", section)) and (
                m := re.search(r"x hello\+sdk\s+([\d.]+)", line)):
            figures.append(Figure("startup", f"start -> first answer ({kind.group(1)}), ours / hello+sdk", median,
                                  median / float(m.group(1)), "ms", "<=", 1.2, on_ratio=True))
        elif (kind := re.search(r"first call .* after connecting, (\w+)-kind", section)) and (
                m := re.search(r"([+-][\d.]+) ms", line)):
            figures.append(Figure("startup", f"first call 3 s after connecting ({kind.group(1)}), added over hello+sdk",
                                  float(m.group(1)), median - float(m.group(1)), "ms", "<=", 50.0))
    return figures


def run_bench(name: str, quick: bool, out: Path) -> tuple[str, float, list[Figure], str | None]:
    """(load average before, seconds, figures, failure) of one bench; its output goes to ``out/<name>.log``."""
    args = BENCHES[name][0 if quick else 1]
    json_path = out / f"{name}.json"
    json_path.unlink(missing_ok=True)
    command = [sys.executable, str(BENCH / f"{name}.py"), *args]
    if name not in NO_JSON:
        command += ["--json", str(json_path)]
    load = load_average()
    print(f"[{time.strftime('%H:%M:%S')}] {name} (load {load}): {' '.join(command[1:])}", flush=True)
    started = time.perf_counter()
    with (out / f"{name}.log").open("w") as log:
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, text=True, timeout=3600)
    seconds = time.perf_counter() - started
    failure = None if done.returncode == 0 else f"exit code {done.returncode} (see {name}.log)"
    if name == "startup":
        figures = startup_figures((out / f"{name}.log").read_text())
        if not figures and failure is None:
            failure = "its report was not recognised (see startup.log)"
    elif json_path.exists():
        figures = [Figure(**{k: v for k, v in f.items() if k not in ("ratio", "passed")})
                   for f in json.loads(json_path.read_text())]
    else:
        figures = []
    print(f"    {seconds:.0f} s, {sum(f.passed for f in figures)}/{len(figures)} goals met"
          + (f"; FAILED: {failure}" if failure else ""), flush=True)
    return load, seconds, figures, failure


def number(value: float | None, unit: str = "") -> str:
    if value is None:
        return ""
    text = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    return f"{text} {unit}".strip()


def table(rows: list[tuple[str, str, float, list[Figure], str | None]], command: str) -> str:
    v = versions()
    lines = [f"Measured {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC with `{command}` on {os.cpu_count()} "
             f"cores; ai-orchestration-mcp {ours_version()}, " + ", ".join(f"{k} {x}" for k, x in v.items()) + ".",
             "", "| bench | figure | goal | measured | baseline | ratio | met | load before (1, 5, 15 min) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, load, _seconds, figures, failure in rows:
        if failure:
            lines.append(f"| {name} | **failed**: {failure} | | | | | | {load} |")
        for f in figures:
            goal = f"{'ratio' if f.on_ratio else ''} {f.op} {f.goal:g}{'' if f.on_ratio else ' ' + f.unit}".strip()
            lines.append(f"| {f.bench} | {f.name} | {goal} | {number(f.measured, f.unit)} | "
                         f"{number(f.baseline, f.unit)} | {number(f.ratio)} | {'yes' if f.passed else '**no**'} | "
                         f"{load} |")
    return "\n".join(lines) + "\n"


def chart(figures: list[Figure], path: Path) -> None:
    """Each figure's checked value as a share of its goal (at most 1: met), one bar each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [f for f in figures if f.checked is not None and f.goal]
    shares = [max(f.checked, 0.0) / f.goal if f.op == "<=" else (f.goal / f.checked if f.checked > 0 else 10.0)
              for f in shown]
    fig, ax = plt.subplots(figsize=(10, 0.38 * len(shown) + 1.5))
    labels = [f"{f.bench}: {f.name}" for f in shown]
    ax.barh(range(len(shown)), [min(s, 3.0) for s in shares],
            color=["#2e7d32" if f.passed else "#c62828" for f in shown])
    for i, share in enumerate(shares):
        ax.text(min(share, 3.0) + 0.02, i, f"{share:.2f}", va="center", fontsize=8)
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_yticks(range(len(shown)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 3.2)
    ax.set_xlabel("share of the goal used (<= 1 meets it; bars capped at 3)")
    ax.set_title("bench/run_all.py: each figure against its goal")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter series: under 10 minutes on 2 cores")
    parser.add_argument("--out", default="bench-results", help="folder for results.md, ratios.png and the logs")
    parser.add_argument("--only", nargs="+", choices=list(BENCHES), help="run only these benches")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows = []
    for name in args.only or BENCHES:
        load, seconds, figures, failure = run_bench(name, args.quick, out)
        rows.append((name, load, seconds, figures, failure))
    command = "python bench/run_all.py" + (" --quick" if args.quick else "") + (
        f" --only {' '.join(args.only)}" if args.only else "")
    total_s = time.perf_counter() - started
    text = table(rows, command) + f"\nAll benches took {total_s / 60:.1f} min.\n"
    (out / "results.md").write_text(text)
    chart([f for row in rows for f in row[3]], out / "ratios.png")
    print(f"\n{text}\nwritten: {out / 'results.md'}, {out / 'ratios.png'}")
    if any(row[4] for row in rows):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
