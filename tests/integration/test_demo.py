"""The README's first command, ``ai-orchestration-mcp demo``, run as a new user runs it."""

from __future__ import annotations

import subprocess
import sys


def test_the_demo_shows_the_fallback_answer_and_the_metrics() -> None:
    done = subprocess.run([sys.executable, "-m", "server", "demo"], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    out = done.stdout
    assert "orchestrate answered:" in out and "provider=sim-claude" in out
    attempts = [line.split() for line in out.splitlines() if line.strip().startswith("attempt:")]
    assert [(a[1], a[2]) for a in attempts][:1] == [("flaky-openai", "error")] and attempts[-1][1] == "sim-claude"
    assert "monitor_operations (15m, by provider):" in out and "Traceback" not in done.stderr
