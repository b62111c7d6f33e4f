"""The bench harness's pure parts: the pin file, the alternating order, goal verdicts, and reading
bench/startup.py's report (the benches themselves are never run by the suite)."""

from __future__ import annotations

from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture
def harness(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import harness

    return harness


def test_every_baseline_is_pinned_to_an_exact_version_with_litellm_at_the_readmes_version(harness) -> None:
    sections = harness.pin_sections()
    assert set(sections) == {"litellm", "servers"}
    assert all("==" in line for lines in sections.values() for line in lines)
    assert harness.pins("litellm")["litellm"] == "1.106.2"
    assert {"mcp", "openai", "anthropic", "dbos"} <= set(harness.pins("servers"))


def test_an_unpinned_baseline_is_refused(harness, tmp_path: Path) -> None:
    pins = tmp_path / "pins.txt"
    pins.write_text("# [litellm]\nlitellm>=1.100\n")
    with pytest.raises(SystemExit, match="not pinned to an exact version"):
        harness.pin_sections(pins)


def test_pairs_alternate_which_side_runs_first(harness) -> None:
    assert [harness.alternate(i, ("a", "b")) for i in range(3)] == [["a", "b"], ["b", "a"], ["a", "b"]]
    assert harness.alternate(1, ["x", "y", "z"]) == ["y", "z", "x"]


def test_goals_apply_to_the_ratio_or_to_the_figure(harness) -> None:
    Figure = harness.Figure
    assert Figure("pool", "ratio", 0.2, 1.0, "ms", "<=", 0.25, on_ratio=True).passed
    assert not Figure("pool", "ratio", 0.3, 1.0, "ms", "<=", 0.25, on_ratio=True).passed
    assert Figure("http", "floor", 80.0, 100.0, "calls/s", ">=", 0.7, on_ratio=True).passed
    assert not Figure("http", "cpu", 1.2, 4.0, "ms", "<=", 1.0).passed
    assert not Figure("x", "no baseline for a ratio", 1.0, None, "ms", "<=", 2.0, on_ratio=True).passed


def test_run_all_reads_the_startup_report(harness) -> None:
    import run_all

    report = """
start -> tools/list reply, ms: median (p10-p90) of 3 starts (x2: one per provider kind)
  hello        500 (490-510)  x hello  1.00  x hello+sdk  0.80  CPU    400 ms
  ours         600 (590-610)  x hello  1.20  x hello+sdk  0.96  CPU    450 ms  target <= 1.3x hello: met

start -> first answer through the openai-kind provider, ms (the call written with the handshake)
  hello+sdk    700 (690-710)  CPU    600 ms
  ours         770 (760-780)  x hello+sdk  1.10  CPU    650 ms  (overhead_ms reported: 3.0)  target <= 1.2x: met

first call 3 s after connecting, openai-kind provider, ms (the call's round trip)
  hello+sdk     20 (18-22)
  ours          80 (70-90)    +60.0 ms  target within 50 ms: MISSED
"""
    figures = {f.name: f for f in run_all.startup_figures(report)}
    assert figures["start -> tools/list, ours / hello"].ratio == pytest.approx(1.2)
    assert figures["start -> tools/list, ours / hello+sdk"].passed
    assert figures["start -> first answer (openai), ours / hello+sdk"].passed
    delayed = figures["first call 3 s after connecting (openai), added over hello+sdk"]
    assert (delayed.measured, delayed.passed) == (60.0, False)


def test_run_all_reads_the_startup_report_of_before_the_first_answer_issue(harness) -> None:
    import run_all

    report = """server   tools  median ms      p10      p90  × hello  CPU ms  × hello  RSS MB  target (wall time and RSS)
hello        1     555.0   536.0   578.0     1.00    693     1.00    65.9
simple      10     582.0   552.0   610.0     1.05    599     0.86    70.7  ≤1.15× and <80 MB: met
full        10     623.0   585.0   657.0     1.40    643     0.93    74.7  ≤1.3× and <150 MB: NOT met
"""
    figures = {f.name: f for f in run_all.startup_figures(report)}
    assert figures["start -> tools/list, simple / hello"].passed
    assert figures["start -> tools/list, full / hello"].ratio == pytest.approx(1.40)
    assert not figures["start -> tools/list, full / hello"].passed
