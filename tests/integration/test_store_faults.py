"""Storage faults with real server processes (issue 15): an unusable database path, a file system that is full or
read-only at start-up, fills up or turns read-only while the server runs, and DBOS's system database on a full
disk at the first launch. Every failed write gives its caller a clear error naming the condition and no id;
reads go on; nothing of a refused write is kept; the server recovers once there is room again (or, for a file
system the kernel made read-only, says that it needs a restart, and serves everything after one).

The small file systems live in a private mount namespace of the server's own (``unshare -m``): a tmpfs, or an
ext4 image on a loop device, mounted with ``errors=remount-ro`` and turned read-only as a disk error would turn
it (``/sys/fs/ext4/<device>/trigger_fs_error``). A tmpfs cannot stand in for the second: Linux refuses to
remount a file system read-only while a process holds a file on it open for writing, as SQLite does.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from server.simulator import Upstream
from tests.integration.test_store_durability import one_line_error, server_config
from tests.integration.test_workflows_durability import call, work
from tests.serving import SERVER_COMMAND, free_port, server_env, wait_for_port
from tests.services import stop_process, unavailable, wait_until

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("kind", ["under a file", "a directory"])
def test_an_unusable_database_path_stops_the_start_with_one_line(tmp_path: Path, kind: str) -> None:
    (tmp_path / "file").write_text("")
    database = tmp_path / "file" / "state.db" if kind == "under a file" else tmp_path
    config = tmp_path / "config.toml"
    config.write_text("")
    result = subprocess.run([*SERVER_COMMAND, "--config", str(config), "--database", str(database)],
                            capture_output=True, text=True, env=server_env(), timeout=120, stdin=subprocess.DEVNULL)
    line = one_line_error(result)
    assert line.startswith(f"storage error: cannot open the database {database}: "), line


def private_mount(command: str) -> None:
    """Skip unless ``command`` mounts in a private mount namespace here (a failure when CI is set)."""
    unshare = shutil.which("unshare")
    probe = unshare and subprocess.run([unshare, "-m", "--propagation", "private", "sh", "-c", command],
                                       capture_output=True, text=True, timeout=60)
    if not probe or probe.returncode != 0:
        unavailable(f"cannot mount in a private mount namespace here "
                    f"({probe.stderr.strip() if probe else 'unshare missing'})")


def tmpfs(size: str) -> str:
    """The mount command of a tmpfs of ``size`` (for :class:`NamespacedServer`; ``{folder}`` is filled in)."""
    private_mount(f"mount -t tmpfs -o size={size} none /mnt")
    return f'mount -t tmpfs -o size={size} none "{{folder}}"'


def ext4_image(path: Path, size: str = "64M") -> str:
    """Make an ext4 image at ``path``; the mount command of it on a loop device, turned read-only by the kernel on
    an error (``{folder}`` is filled in)."""
    if shutil.which("mkfs.ext4") is None:
        unavailable("mkfs.ext4 is missing (Debian's e2fsprogs)")
    subprocess.run(["truncate", "-s", size, str(path)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(path)], check=True, capture_output=True, timeout=120)
    command = f'mount -o loop,errors=remount-ro "{path}" "{{folder}}"'
    probe = path.parent / "probe-mount"
    probe.mkdir(exist_ok=True)
    private_mount(command.replace("{folder}", str(probe)))
    wait_until(lambda: not attached(path), 30, "the probe's loop device released")
    return command


def attached(image: Path) -> bool:
    """Whether a loop device still holds ``image`` (released once the server's namespace is gone)."""
    return bool(subprocess.run(["losetup", "-j", str(image)], capture_output=True, text=True).stdout.strip())


class NamespacedServer:
    """The server in a private mount namespace, with a small file system (``mount``) at ``folder`` holding its
    database (or only what the config puts there, when ``database`` is given); ``prepare`` runs after the mount."""

    def __init__(self, tmp_path: Path, config: Path, mount: str, *, database: Path | None = None,
                 prepare: str = "true") -> None:
        self.folder = tmp_path / "small"
        self.folder.mkdir(exist_ok=True)
        self.database = database or self.folder / "state.db"
        self.port = free_port()
        self.log = tmp_path / "server.log"
        script = f'{mount.replace("{folder}", str(self.folder))} && {prepare} && exec "$@"'
        with self.log.open("a") as log:
            self.process = subprocess.Popen(
                ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", *SERVER_COMMAND,
                 "--transport", "http", "--port", str(self.port), "--config", str(config), "--database",
                 str(self.database), "--log-level", "WARNING"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, env=server_env())
        wait_for_port(self.port, self.process)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def inside(self, command: str) -> subprocess.CompletedProcess[str]:
        """Run a shell command in the server's mount namespace."""
        return subprocess.run(["nsenter", "-t", str(self.process.pid), "-m", "sh", "-c", command],
                              capture_output=True, text=True, timeout=60, check=False)

    def stop(self) -> None:
        stop_process(self.process)


async def refused(url: str, tool: str, **arguments: Any) -> str:
    """The error text of a tool call that must fail."""
    with anyio.fail_after(30):
        async with Client(url) as client:
            result = await client.call_tool(tool, arguments)
    assert result.is_error, result.structured_content
    return result.content[0].text


BIG = "x " * 20_000
"""More than the WAL's spare pages, so a full disk shows at once."""
SMALL = {"name": "w", "steps": [work("s", "r", "t", [0.0])]}


async def assert_writes_refused_and_reads_go_on(url: str, before: dict, name: str, condition: str) -> None:
    """A write of every kind a client makes (a new conversation, a turn of ``before``'s, a pattern, a workflow, a
    run) is refused naming ``condition``; what was stored before can still be read: the pattern, the run, the
    operations summary."""
    for tool, arguments in (
            ("orchestrate", {"prompt": f"after {BIG}"}),
            ("orchestrate", {"prompt": f"again {BIG}", "continuation_id": before["continuation_id"]}),
            ("register_pattern", {"name": name, "template": BIG, "description": "d"}),
            ("save_workflow", {"definition": {"name": name, "description": BIG[:4000],
                                              "steps": [work("s", "r", BIG, [0.0])]}})):
        text = await refused(url, tool, **arguments)
        # Named, not a bare "Error executing tool …", and no id in it.
        assert f"({condition})" in text and "could not store" in text, (tool, text)
    assert f"({condition})" in await refused(url, "run_workflow", workflow=SMALL, run_id="run-refused", wait=False)
    found = await call(url, "search_patterns", query="kept")
    assert "kept" in [p["name"] for p in found["results"]], found
    assert (await call(url, "workflow_run", run_id="run-before"))["status"] == "completed"
    assert "groups" in await call(url, "monitor_operations", window="1h")


async def store_before(url: str) -> dict:
    """A conversation, a pattern and a completed run stored while the storage works; returns the conversation."""
    before = await call(url, "orchestrate", prompt="before")
    await call(url, "register_pattern", name="kept", template="Review {{ code }}", description="kept pattern")
    await call(url, "run_workflow", workflow=SMALL, run_id="run-before")  # the runtime is up
    return before


async def assert_refused_writes_were_not_kept(url: str, upstream: Upstream, before: dict, name: str) -> None:
    reply = await call(url, "orchestrate", prompt="after", continuation_id=before["continuation_id"])
    sent = [m["content"] for m in upstream.requests[-1].body["messages"] if m["role"] == "user"]
    assert sent == ["before", "after"], sent  # the refused turns were not stored
    assert reply["continuation_id"] == before["continuation_id"]
    found = await call(url, "search_patterns", query=name)
    assert name not in [p["name"] for p in found["results"]], found
    assert f"no saved workflow {name!r}" in await refused(url, "run_workflow", workflow=name)
    assert "run-refused" in await refused(url, "workflow_run", run_id="run-refused")  # an unknown run


async def test_a_file_system_filling_up_while_serving_gives_named_errors_keeps_reads_and_recovers(
        tmp_path: Path, upstream: Upstream, downstream_url: str) -> None:
    config = server_config(tmp_path / "config.toml", upstream, downstream_url)
    server = NamespacedServer(tmp_path, config, tmpfs("2m"))
    try:
        before = await store_before(server.url)
        filled = server.inside(f'dd if=/dev/zero of="{server.folder}/filler" bs=64k 2>/dev/null; sync')
        assert filled.returncode in (0, 1), filled.stderr  # dd ends with "no space left" (1)
        await assert_writes_refused_and_reads_go_on(server.url, before, "full-disk", "disk full")
        # Room again: the server writes again at once, and nothing of the refused writes was kept.
        assert server.inside(f'rm "{server.folder}/filler"').returncode == 0
        await assert_refused_writes_were_not_kept(server.url, upstream, before, "full-disk")
        assert (await call(server.url, "register_pattern", name="room-again", template="t {{ x }}",
                           description="d"))["version"] == 1
        assert (await call(server.url, "run_workflow", workflow=SMALL, run_id="run-after"))["status"] == "completed"
    finally:
        server.stop()


@pytest.mark.timeout(300)  # two server starts with DBOS, an image made and checked: a loaded machine takes its time
async def test_a_file_system_turning_read_only_while_serving_gives_named_errors_keeps_reads_and_says_restart(
        tmp_path: Path, upstream: Upstream, downstream_url: str) -> None:
    config = server_config(tmp_path / "config.toml", upstream, downstream_url)
    mount = ext4_image(tmp_path / "disk.img")
    server = NamespacedServer(tmp_path, config, mount)
    try:
        before = await store_before(server.url)
        turned = server.inside(f'echo test > /sys/fs/ext4/$(basename $(findmnt -n -o SOURCE "{server.folder}"))'
                               "/trigger_fs_error")
        assert turned.returncode == 0, turned.stderr
        await assert_writes_refused_and_reads_go_on(server.url, before, "read-only", "read-only")
    finally:
        server.stop()
    log = server.log.read_text()
    assert "turned read-only while the server runs" in log and "start the server again" in log, log[-3000:]

    # Repaired (unmounted with the server's namespace) and started again: it serves, and kept none of the refused.
    wait_until(lambda: not attached(tmp_path / "disk.img"), 30, "the image's loop device released")
    repaired = subprocess.run(["e2fsck", "-fy", str(tmp_path / "disk.img")], capture_output=True, text=True,
                              timeout=120)
    assert repaired.returncode in (0, 1), repaired.stdout + repaired.stderr  # 1: errors corrected
    server = NamespacedServer(tmp_path, config, mount)
    try:
        await assert_refused_writes_were_not_kept(server.url, upstream, before, "read-only")
        assert (await call(server.url, "workflow_run", run_id="run-before"))["status"] == "completed"
    finally:
        server.stop()


async def test_a_workflow_runtime_that_could_not_launch_on_a_full_disk_launches_at_a_later_call(
        tmp_path: Path, upstream: Upstream, downstream_url: str) -> None:
    # DBOS's system database on a tmpfs that is full before the server starts (the server's own database is not
    # there): the launch at start-up fails; the workflow calls say why; one after the room is back launches it.
    config = server_config(tmp_path / "config.toml", upstream, downstream_url)
    folder = tmp_path / "small"
    with config.open("a") as toml:
        toml.write(f'\n[workflows]\nsystem_database = "{folder / "system.sqlite"}"\n')
    server = NamespacedServer(tmp_path, config, tmpfs("256k"), database=tmp_path / "state.db",
                              prepare=f'{{ dd if=/dev/zero of="{folder}/filler" bs=64k 2>/dev/null; true; }}')
    try:
        assert (await call(server.url, "orchestrate", prompt="hello"))["text"]  # the rest of the server serves
        for _ in range(2):  # each call tries the launch again, and says why it failed
            text = await refused(server.url, "run_workflow", workflow=SMALL, run_id="run-refused", wait=False)
            assert "workflow runtime could not start" in text and "(disk full)" in text, text
            assert "the next workflow call tries again" in text, text
        assert server.inside(f'rm "{folder}/filler"').returncode == 0
        done = await call(server.url, "run_workflow", workflow=SMALL, run_id="run-later")
        assert done["status"] == "completed", done
        assert "run-refused" in await refused(server.url, "workflow_run", run_id="run-refused")  # never started
    finally:
        server.stop()


@pytest.mark.parametrize("command", [[], ["keys", "list"]], ids=["serve", "keys list"])
def test_start_up_on_a_read_only_file_system_names_the_path_and_the_reason(tmp_path: Path, command: list[str]) -> None:
    tmpfs("64k")
    folder = tmp_path / "ro"
    folder.mkdir()
    config = tmp_path / "config.toml"
    config.write_text("")
    result = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                             f'mount -t tmpfs -o ro,size=64k none "{folder}" && exec "$@"', "sh", *SERVER_COMMAND,
                             *command, "--config", str(config), "--database", str(folder / "state.db")],
                            capture_output=True, text=True, env=server_env(), timeout=120, stdin=subprocess.DEVNULL)
    line = one_line_error(result)
    assert str(folder / "state.db") in line and "(read-only)" in line, line

