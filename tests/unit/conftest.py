"""The unit lane: in-process only. A test here that opens a network socket or starts a process fails at once,
so the lane stays fast and a test that needs a transport goes to ``tests/integration/``."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

_NETWORK_FAMILIES = (socket.AF_INET, socket.AF_INET6)


class LaneViolation(AssertionError):
    """A unit test reached for a socket or a subprocess."""


@pytest.fixture(autouse=True)
def in_process_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Network sockets and subprocesses are refused (asyncio's own AF_UNIX socketpair stays allowed)."""
    connect, bind = socket.socket.connect, socket.socket.bind

    def guarded(original: Any) -> Any:
        def call(self: socket.socket, *args: Any, **kwargs: Any) -> Any:
            if self.family in _NETWORK_FAMILIES:
                raise LaneViolation("a unit test opened a network socket: move it to tests/integration/")
            return original(self, *args, **kwargs)
        return call

    def no_process(*args: Any, **kwargs: Any) -> Any:
        raise LaneViolation("a unit test started a process: move it to tests/integration/")

    monkeypatch.setattr(socket.socket, "connect", guarded(connect))
    monkeypatch.setattr(socket.socket, "bind", guarded(bind))
    monkeypatch.setattr(subprocess.Popen, "__init__", no_process)
    yield


@pytest.fixture(scope="session", autouse=True)
def matplotlib_font_list() -> None:
    """Matplotlib builds its font list on first import, running ``fc-list`` when fontconfig is installed (Debian's
    Chromium brings it): a subprocess, which the lane refuses. Built once here, before any guarded test, so a
    chart rendered in a unit test (``monitor_operations(include_chart=true)``) never starts one."""
    try:
        import matplotlib.font_manager  # noqa: F401
    except ImportError:  # simple installs have no matplotlib, and no charts
        pass


@pytest.fixture(scope="session", autouse=True)
def croniter_architecture() -> None:
    """croniter (DBOS's cron library, which schedule checks use) asks ``platform.architecture()`` at import, which
    runs ``file`` on the interpreter: a subprocess. Imported once here, before any guarded test (in full mode DBOS
    has imported it long before a schedule is checked)."""
    try:
        import croniter  # noqa: F401
    except ImportError:  # simple installs have no DBOS, and no schedules
        pass
