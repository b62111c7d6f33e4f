"""Which installed distributions a server process imported from, against ``mcp``'s own dependency set.

:data:`BOOTSTRAP` runs the console script's ``main`` in a subprocess and, at exit, writes every module it
imported (name -> file) to ``$IMPORT_AUDIT_FILE``. :func:`foreign_modules` maps each file to the distribution
that installed it (the ``RECORD`` of every installed distribution) and returns the modules owned by anything
outside the closure of ``mcp``'s requirements: with ``openai``, ``anthropic``, ``sqlite-utils``,
``opentelemetry-sdk`` installed next to it, importing any of them (even a submodule of a namespace package
``mcp`` shares, like ``opentelemetry.sdk``) shows up here.
"""

from __future__ import annotations

import json
import os
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
BOOTSTRAP = """\
import atexit, json, os, sys
_before = set(sys.modules)
def _dump():
    modules = {name: getattr(module, "__file__", None) for name, module in list(sys.modules.items())
               if name not in _before}
    with open(os.environ["IMPORT_AUDIT_FILE"], "w") as handle:
        json.dump(modules, handle)
atexit.register(_dump)
from server.app.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


OPTIONAL_IMPORTS = {
    "sniffio": "anyio and httpcore2 import it when it is installed (try/except ImportError); openai and anthropic "
               "bring it in full installs; a venv with mcp alone has none and runs (tests/integration/test_fresh_venv.py)",
    "trio": "httpcore2 imports it for its locks when it is installed (try/except ImportError); selenium, the test "
            "dependency that drives the dashboard's browser tests, brings it",
    "outcome": "trio's own dependency, imported with it",
    "sortedcontainers": "trio's own dependency, imported with it",
}
"""Distributions outside the closure that the closure's own packages import when present (not our imports)."""


def requirement_closure(root: str) -> set[str]:
    """Canonical names of ``root`` and every distribution it requires, transitively, extras followed
    (``pyjwt[crypto]`` brings ``cryptography``), environment markers evaluated for this interpreter."""
    seen: set[str] = set()
    pending: list[tuple[str, frozenset[str]]] = [(root, frozenset())]
    while pending:
        name, extras = pending.pop()
        key = canonicalize_name(name)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # required on another platform only, or optional: not installed, cannot be imported
        if key in seen and not extras:
            continue
        seen.add(key)
        for text in dist.requires or []:
            requirement = Requirement(text)
            marker = requirement.marker
            if marker is not None and not any(marker.evaluate({"extra": extra}) for extra in (extras or {""})):
                continue
            pending.append((requirement.name, frozenset(requirement.extras)))
    return seen


def _owners() -> dict[Path, str]:
    owners: dict[Path, str] = {}
    for dist in metadata.distributions():
        for file in dist.files or []:
            if file.suffix == ".py" or file.suffix == ".so":
                owners[Path(dist.locate_file(file)).resolve()] = canonicalize_name(dist.metadata["Name"])
    return owners


def foreign_modules(modules: dict[str, str | None], allowed: set[str]) -> dict[str, str]:
    """Modules (name -> owning distribution) whose file belongs to a distribution outside ``allowed``.

    Files of the standard library, of this repository and modules without a file (built-ins, namespace
    packages) are never foreign.
    """
    stdlib = {Path(os.__file__).resolve().parent}  # lib/pythonX.Y of the base interpreter, lib-dynload inside
    owners = _owners()
    foreign = {}
    for name, file in modules.items():
        if not file:
            continue
        path = Path(file).resolve()
        owner = owners.get(path)
        if owner is None:
            in_site_packages = "site-packages" in path.parts or "dist-packages" in path.parts
            if path.is_relative_to(REPO) or not in_site_packages and any(path.is_relative_to(r) for r in stdlib):
                continue
            foreign[name] = f"unknown owner of {path}"
        elif owner not in allowed:
            foreign[name] = owner
    return foreign


def read_audit(path: Path) -> dict[str, str | None]:
    """The modules :data:`BOOTSTRAP` recorded."""
    return json.loads(path.read_text())
