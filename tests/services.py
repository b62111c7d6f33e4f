"""Real services the team-deployment tests start themselves: a throwaway PostgreSQL cluster and nginx.

Both come from Debian's packages (``scripts/install-services.sh``, run by ``scripts/test.sh``). When one is not
installed, the tests that need it are skipped with the reason, except when ``CI`` is set: there a missing
service is a failure, so CI can never pass by skipping them.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import anyio
import pytest

from tests.serving import free_port

NGINX = "/usr/sbin/nginx"
T = TypeVar("T")


def unavailable(reason: str) -> None:
    """Skip the test with ``reason``, or fail it when ``CI`` is set (CI installs every service)."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: run scripts/install-services.sh, which scripts/test.sh calls)")
    pytest.skip(f"{reason}; `bash scripts/install-services.sh` (as root) installs it")


def postgres_bindir() -> Path | None:
    """The newest installed PostgreSQL server's ``bin`` folder (Debian: ``/usr/lib/postgresql/N/bin``)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


class PostgresCluster:
    """A PostgreSQL cluster in a temporary folder, listening on 127.0.0.1 on a free port (and on a unix socket in
    that folder), with trust authentication for the one superuser ``aiom``; fsync off (it is thrown away) unless
    ``durable`` (benchmarks: commits reach the disk, as in production).

    PostgreSQL refuses to run as root: as root the server runs as the ``postgres`` user that Debian's package
    creates. :meth:`database` makes a fresh database per test, so tests never see each other's rows.
    """

    USER = "aiom"

    def __init__(self, bindir: Path, *, durable: bool = False) -> None:
        self.bindir = bindir
        self.durable = durable
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="aiom-pg-"))
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"
        self._as: list[str] = []
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                unavailable("PostgreSQL refuses to run as root and there is no `postgres` user")
            os.chown(self.folder, owner.pw_uid, owner.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str, timeout_s: float = 120.0) -> None:
        done = subprocess.run([*self._as, *args], capture_output=True, text=True, timeout=timeout_s)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{Path(args[0]).name} failed ({done.returncode}): {done.stderr.strip()} {log}")

    def start(self) -> PostgresCluster:
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", self.USER, "--auth=trust",
                  "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync")
        options = (f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c max_connections=400 "
                   "-c shared_buffers=64MB")
        if not self.durable:  # thrown away after the tests: no need to reach the disk
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options, "-w",
                  "-t", "60", "start")
        return self

    def stop(self) -> None:
        try:
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop",
                      timeout_s=60)
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        """A ``postgresql://`` URL for ``database`` over TCP on loopback."""
        return f"postgresql://{self.USER}@127.0.0.1:{self.port}/{database}"

    def database(self) -> str:
        """Create an empty database; returns its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


class Nginx:
    """nginx in the foreground with a generated configuration, listening on a free loopback port.

    ``http_block`` is the inside of the ``http {}`` block; ``{port}`` and ``{folder}`` in it are replaced by
    :attr:`port` and :attr:`folder`. Logs, pid and temporary files live in that temporary folder. A ``port``
    chosen before (the replicas behind it must know it, for their allowed Host) may be given.
    """

    def __init__(self, http_block: str, port: int | None = None) -> None:
        self.port = port or free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="aiom-nginx-"))
        os.chmod(self.folder, 0o755)
        self.config = self.folder / "nginx.conf"
        self.config.write_text(
            f"pid {self.folder}/nginx.pid;\nerror_log {self.folder}/error.log warn;\nworker_processes 1;\n"
            "daemon off;\nevents { worker_connections 1024; }\n"
            "http {\n"
            f"  access_log {self.folder}/access.log;\n  client_body_temp_path {self.folder}/body;\n"
            f"  proxy_temp_path {self.folder}/proxy;\n  fastcgi_temp_path {self.folder}/fastcgi;\n"
            f"  uwsgi_temp_path {self.folder}/uwsgi;\n  scgi_temp_path {self.folder}/scgi;\n"
            + http_block.replace("{port}", str(self.port)).replace("{folder}", str(self.folder)) + "\n}\n")
        self.process: subprocess.Popen | None = None

    def start(self) -> Nginx:
        from tests.serving import wait_for_port

        self.process = subprocess.Popen([NGINX, "-p", str(self.folder), "-c", str(self.config)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wait_for_port(self.port, self.process)
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, 10)
            if self.process.stderr:
                self.process.stderr.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def error_log(self) -> str:
        path = self.folder / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""


def wait_until(condition, timeout_s: float, what: str, interval_s: float = 0.05):
    """Return ``condition()``'s first truthy value, checked every ``interval_s``; fail after ``timeout_s``.

    For waiting on another process (a replica, a database), which no event in this process can announce."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        time.sleep(interval_s)  # bounded-wait: the deadline above bounds it


async def until(condition: Callable[[], Awaitable[T]], timeout_s: float, what: str, interval_s: float = 0.05) -> T:
    """:func:`wait_until` for async code: ``await condition()``'s first truthy value, asked every ``interval_s``
    (the whole wait, calls included, bounded by ``timeout_s``).

    For a state of another process that only a request can read (a run's status, a server's log of work)."""
    try:
        with anyio.fail_after(timeout_s):
            while not (value := await condition()):
                await anyio.sleep(interval_s)  # bounded-wait: fail_after bounds it
            return value
    except TimeoutError:
        raise AssertionError(f"not within {timeout_s} s: {what}") from None


def stop_process(process: subprocess.Popen, timeout_s: float = 15.0) -> None:
    """SIGTERM ``process`` and reap it; SIGKILL it if it has not exited within ``timeout_s``."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout_s)
