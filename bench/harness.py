"""What every bench shares: pinned baseline venvs, the versions and load average printed before a run, the
alternating order of interleaved series, and the figures `bench/run_all.py` collects.

- :func:`baseline_python` builds (once per pin set) the venv of one section of `bench/requirements-baselines.txt`;
- :func:`preamble` prints the load average and the versions of everything a bench compares;
- :func:`alternate` gives the order of a pair (or a list) for round ``i``, so no side always runs first;
- :class:`Figure` and :func:`write_figures`: a bench's headline figures, goal and verdict, as JSON (``--json``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import TypeVar

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PINS = BENCH / "requirements-baselines.txt"
COMPARED = ("mcp", "openai", "anthropic", "dbos", "litellm")
T = TypeVar("T")


# -- pins and venvs -------------------------------------------------------------------------------------------

def pin_sections(path: Path = PINS) -> dict[str, list[str]]:
    """``{section: ["name==version", ...]}`` from the pin file's ``# [section]`` headers."""
    sections: dict[str, list[str]] = {}
    current = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("# [") and "]" in line:
            current = line[3:line.index("]")]
            sections[current] = []
        elif line and not line.startswith("#"):
            if current is None:
                raise SystemExit(f"{path}: {line!r} stands before any '# [section]' header")
            if "==" not in line:
                raise SystemExit(f"{path}: {line!r} is not pinned to an exact version (name==version)")
            sections[current].append(line.split("#", 1)[0].strip())
    return sections


def pins(section: str) -> dict[str, str]:
    """``{distribution: version}`` pinned in ``section``."""
    lines = pin_sections()[section]
    return {name.lower(): version for name, version in (line.split("==", 1) for line in lines)}


def baseline_python(section: str) -> Path:
    """The python of the venv for ``section``, created from PyPI when its pins changed (or on first use).

    The venv lives at ``.cache/bench-<section>-<first 12 hex of sha256 of the section's lines>``; venvs of the
    same section with another hash are removed.
    """
    lines = pin_sections()[section]
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()[:12]
    venv = REPO / ".cache" / f"bench-{section}-{digest}"
    python, ready = venv / "bin" / "python", venv / ".bench-ready"
    if python.exists() and ready.exists():
        return python
    for stale in venv.parent.glob(f"bench-{section}-*"):
        shutil.rmtree(stale)  # another pin set, or a venv an interrupted run left half made
    print(f"creating {venv} with {' '.join(lines)} (when the pins change only) …", file=sys.stderr, flush=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    requirements = venv.parent / f"bench-{section}-{digest}.txt"
    requirements.write_text("\n".join(lines) + "\n")
    for command, timeout_s in (([shutil.which("python3") or sys.executable, "-m", "venv", str(venv)], 300),
                               ([str(python), "-m", "pip", "install", "-q", "-r", str(requirements)], 1800)):
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    requirements.unlink()
    ready.write_text("\n".join(lines) + "\n")
    return python


# -- versions and load ----------------------------------------------------------------------------------------

_VERSIONS_SCRIPT = ("import json, sys\nfrom importlib import metadata\nout = {'python': sys.version.split()[0]}\n"
                    "for name in sys.argv[1:]:\n    try:\n        out[name] = metadata.version(name)\n"
                    "    except metadata.PackageNotFoundError:\n        pass\nprint(json.dumps(out))\n")


def versions(python: Path | None = None) -> dict[str, str]:
    """Python and the compared distributions installed for ``python`` (default: this process)."""
    if python is None:
        out = {"python": sys.version.split()[0]}
        for name in COMPARED:
            try:
                out[name] = metadata.version(name)
            except metadata.PackageNotFoundError:
                pass
        return out
    done = subprocess.run([str(python), "-c", _VERSIONS_SCRIPT, *COMPARED], capture_output=True, text=True,
                          check=True, timeout=60)
    return json.loads(done.stdout)


def ours_version() -> str:
    sys.path.insert(0, str(REPO))
    import server

    return server.__version__


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def mismatches(installed: dict[str, str], section: str = "servers") -> list[str]:
    """Distributions whose version here differs from the pin of ``section`` (for in-process baselines)."""
    pinned = pins(section)
    return [f"{name} {installed[name]} (pinned {pinned[name]})" for name in installed
            if name in pinned and installed[name] != pinned[name]]


def preamble(title: str, baselines: dict[str, Path | None] | None = None, *, in_process: bool = True) -> None:
    """Print the bench's title, the load average before it starts and the versions of what it compares.

    Args:
        baselines: label -> python of a baseline venv (``None``: this process), printed beside ours.
        in_process: this bench runs baselines in this process: check this venv against the ``[servers]`` pins.
    """
    here = versions()
    print(f"== {title}")
    print(f"load average before: {load_average()} ({os.cpu_count()} cores)")
    print(f"versions, ours: ai-orchestration-mcp {ours_version()}, " + ", ".join(f"{k} {v}" for k, v in here.items()))
    for label, python in (baselines or {}).items():
        theirs = versions(python) if python is not None else here
        print(f"versions, {label}: " + ", ".join(f"{k} {v}" for k, v in theirs.items()))
    if in_process and (wrong := mismatches(here)):
        print(f"WARNING: in-process baselines use versions other than bench/requirements-baselines.txt pins: "
              f"{', '.join(wrong)}")
    sys.stdout.flush()


# -- order ----------------------------------------------------------------------------------------------------

def alternate(index: int, items: Sequence[T]) -> list[T]:
    """``items`` rotated by ``index`` (for a pair: A, B in even rounds and B, A in odd ones)."""
    shift = index % len(items)
    return list(items[shift:]) + list(items[:shift])


# -- figures --------------------------------------------------------------------------------------------------

@dataclass
class Figure:
    """One headline figure beside its baseline and its goal.

    ``goal`` applies to ``ratio`` (measured / baseline) when ``on_ratio`` else to ``measured``; ``op`` is
    ``"<="`` or ``">="``.
    """

    bench: str
    name: str
    measured: float
    baseline: float | None
    unit: str
    op: str
    goal: float
    on_ratio: bool = False

    @property
    def ratio(self) -> float | None:
        return self.measured / self.baseline if self.baseline else None

    @property
    def checked(self) -> float | None:
        return self.ratio if self.on_ratio else self.measured

    @property
    def passed(self) -> bool:
        value = self.checked
        if value is None:
            return False
        return value <= self.goal if self.op == "<=" else value >= self.goal

    def verdict(self) -> str:
        what = "ratio" if self.on_ratio else self.unit
        return f"{self.name}: {self.checked:.3g} {what}, goal {self.op} {self.goal:g}: " + (
            "met" if self.passed else "NOT MET")


def write_figures(path: str | None, figures: list[Figure]) -> None:
    """Print each figure's verdict; with ``path`` also write them as JSON for ``bench/run_all.py``."""
    print("\nverdicts:")
    for figure in figures:
        print(f"  {figure.verdict()}")
    if path:
        Path(path).write_text(json.dumps([{**asdict(f), "ratio": f.ratio, "passed": f.passed} for f in figures],
                                         indent=1))
