"""The README's nginx configuration is the one the team tests run (``tests.team.nginx_block``), not a copy that
can drift from it."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

from tests.team import nginx_block

README = Path(__file__).resolve().parents[2] / "README.md"


def _lines(text: str) -> list[str]:
    """Configuration lines without comments, indentation or blank lines."""
    return [line for raw in text.splitlines() if (line := raw.split("#", 1)[0].strip())]


def test_the_readmes_nginx_configuration_is_the_tested_one() -> None:
    documented = re.search(r"```nginx\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert documented is not None, "the README has no nginx block"
    replicas = [SimpleNamespace(id=f"replica-{x}", port=8001 + i) for i, x in enumerate("abc")]
    tested = nginx_block(replicas).replace("{port}", "8000").replace("{folder}", "/var/log/nginx")
    assert _lines(documented.group(1)) == _lines(tested)
