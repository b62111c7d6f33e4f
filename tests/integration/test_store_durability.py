"""The store's durability with real server processes (issue 15): one serving process per SQLite database, no
acknowledged id lost to SIGKILL, and one hostile upstream reply that hurts only its own caller (storage faults:
``test_store_faults.py``).

Servers run as ``python -m server --transport http`` on a database in tmp_path, against the local upstream of
this test process and the session's downstream MCP server for workflow steps.
"""

from __future__ import annotations

import json
import random
import socket
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest
from mcp import Client

from server.simulator import Behaviour, Upstream
from server.store.sqlite import SQLiteStore
from tests.conftest import provider_entry, write_config
from tests.integration.test_workflows_durability import ServerProcess, call, finished, work, work_log
from tests.serving import SERVER_COMMAND, RawStdioSession, free_port, server_env
from tests.services import until

pytestmark = pytest.mark.anyio
KILLS = 10
CLIENTS = 3
KEYS = 3


def server_config(path: Path, upstream: Upstream, downstream_url: str) -> Path:
    write_config(path, provider_entry(upstream, "primary", kind="openai", model="gpt-sim"))
    with path.open("a") as config:
        config.write(f'\n[mcp_servers.down]\nurl = "{downstream_url}"\n')
    return path


@pytest.fixture
def server(tmp_path: Path, upstream: Upstream, downstream_url: str) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path, downstream_url)
    server_config(process.config, upstream, downstream_url)
    yield process
    process.stop()


def cli(*args: str, database: Path, config: Path) -> subprocess.CompletedProcess[str]:
    """A short CLI command (``keys``, ``patterns``, ``metrics`` …) on ``database``."""
    return subprocess.run([*SERVER_COMMAND, *args, "--config", str(config), "--database", str(database)],
                          capture_output=True, text=True, env=server_env(), timeout=120, check=False)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a refused start prints (and nothing else of note: no traceback)."""
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


# -- 15.5: one serving process per SQLite database ---------------------------------------------------------------


async def test_a_second_serving_process_is_refused_and_the_first_ones_run_is_not_run_twice(
        server: ServerProcess, downstream_url: str) -> None:
    run = f"lock-{uuid.uuid4().hex[:8]}"
    definition = {"name": "slow", "steps": [work("a", run, "x", [4.0]), work("b", run, "{{ steps.a.output.text }}",
                                                                               [0.0], "a")],
                  "outputs": {"final": "{{ steps.b.output.text }}"}}
    server.start()
    await call(server.url, "run_workflow", workflow=definition, wait=False, run_id=run)
    async def a_started() -> bool:
        return (await work_log(downstream_url, run)).get("a") is not None

    await until(a_started, 30, "step a executing on the first server")

    second = await anyio.to_thread.run_sync(lambda: subprocess.run(
        [*SERVER_COMMAND, "--transport", "http", "--port", str(free_port()), "--config", str(server.config),
         "--database", str(server.database)], capture_output=True, text=True, env=server_env(), timeout=120))
    line = one_line_error(second)
    assert f"pid {server.process.pid}" in line and str(server.database) in line, line
    assert "PostgreSQL" in line and "is serving the database" in line, line

    # The short commands work beside the running server (SQLite's own locking; they take no serving lock).
    created = await anyio.to_thread.run_sync(lambda: cli("keys", "create", "beside", database=server.database,
                                                         config=server.config))
    assert created.returncode == 0, created.stderr
    key_id = created.stderr.split()[1]
    listed = await anyio.to_thread.run_sync(lambda: cli("keys", "list", database=server.database,
                                                        config=server.config))
    assert listed.returncode == 0 and key_id in listed.stdout, listed.stderr
    metrics = await anyio.to_thread.run_sync(lambda: cli("metrics", database=server.database, config=server.config))
    assert metrics.returncode == 0, metrics.stderr
    exported = await anyio.to_thread.run_sync(lambda: cli("patterns", "export", "--out", str(server.database.parent
                                                          / "export"), database=server.database, config=server.config))
    assert exported.returncode == 0, exported.stderr

    status = await finished(server.url, run, 60)
    assert status["status"] == "completed" and status["outputs"] == {"final": "b[a[x]]"}, status
    log = await work_log(downstream_url, run)
    assert (len(log["a"]), len(log["b"])) == (1, 1), log  # nobody else recovered and ran the in-flight step

    # The OS releases the lock of a killed server: the next one serves the same database at once.
    server.kill()
    server.start()
    assert (await call(server.url, "workflow_run", run_id=run))["status"] == "completed"


def test_a_second_simple_mode_server_on_the_same_state_file_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("")
    state = tmp_path / "state.json"
    first = RawStdioSession(["--simple", "--config", str(config), "--database", str(state)])
    try:
        first.initialize()  # serving
        second = subprocess.run([*SERVER_COMMAND, "--simple", "--config", str(config), "--database", str(state)],
                                capture_output=True, text=True, env=server_env(), timeout=120,
                                stdin=subprocess.DEVNULL)
        line = one_line_error(second)
        assert f"pid {first.process.pid}" in line and str(state) in line, line
    finally:
        assert first.close() == 0


# -- 15.4: no acknowledged id lost to SIGKILL --------------------------------------------------------------------


@dataclass
class Acknowledged:
    """Every id a client got back, with what it must find afterwards."""

    turns: dict[str, int] = field(default_factory=dict)  # continuation id -> turns acknowledged
    patterns: dict[str, int] = field(default_factory=dict)  # name -> version
    workflows: dict[str, int] = field(default_factory=dict)  # name -> version
    runs: list[str] = field(default_factory=list)
    incidents: dict[str, str] = field(default_factory=dict)  # incident id -> note
    keys: list[str] = field(default_factory=list)
    rounds: int = 0
    """Client rounds completed (each acknowledged one id of every kind but keys)."""
    round_done: anyio.Event = field(default_factory=anyio.Event)
    """Set when the next round completes (then replaced by a fresh event)."""

    def count(self) -> int:
        return (len(self.turns) + len(self.patterns) + len(self.workflows) + len(self.runs) + len(self.incidents)
                + len(self.keys))


async def seed_incidents(database: Path, count: int) -> list[str]:
    """Open incidents to acknowledge (their last breach in the future, so none resolves meanwhile)."""
    store = SQLiteStore(database)
    ids = [f"inc-{uuid.uuid4().hex[:12]}" for _ in range(count)]
    try:
        for incident_id in ids:
            await store.incidents.put_incident({
                "id": incident_id, "severity": "warning", "metric": "error_rate", "value": 0.5, "threshold": 0.1,
                "provider": "primary", "status": "open", "opened_at": 1.0, "last_value": 0.5,
                "last_breach_at": 4.0e9, "actions": []})
    finally:
        await store.aclose()
    return ids


async def client_round(url: str, name: str, acked: Acknowledged, incidents: list[str]) -> None:
    """One client's round of acknowledged writes of every kind, each noted only once its reply arrived."""
    first = await call(url, "orchestrate", prompt=f"hello from {name}")
    acked.turns[first["continuation_id"]] = 2
    again = await call(url, "orchestrate", prompt="and again", continuation_id=first["continuation_id"])
    assert again["continuation_id"] == first["continuation_id"]
    acked.turns[first["continuation_id"]] = 4
    pattern = await call(url, "register_pattern", name=name, template=f"Review {{{{ code }}}} ({name})",
                         description=f"pattern {name}")
    acked.patterns[name] = pattern["version"]
    saved = await call(url, "save_workflow", definition={"name": name, "steps": [work("s", name, "t", [0.0])]})
    acked.workflows[name] = saved["version"]
    await call(url, "run_workflow", workflow=name, wait=False, run_id=f"run-{name}")
    acked.runs.append(f"run-{name}")
    if incidents:
        incident_id, note = incidents.pop(), f"seen by {name}"
        try:
            await call(url, "acknowledge_incident", incident_id=incident_id, note=note)
        except BaseException:
            incidents.append(incident_id)  # not acknowledged (the server died): another round tries again
            raise
        acked.incidents[incident_id] = note
    acked.rounds += 1
    acked.round_done.set()
    acked.round_done = anyio.Event()


def assert_all_acknowledged_ids_are_stored(database: Path, acked: Acknowledged) -> None:
    with sqlite3.connect(database) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        for cid, turns in acked.turns.items():
            stored = db.execute("SELECT count(*) FROM turns WHERE conversation_id = ?", (cid,)).fetchone()[0]
            assert stored >= turns, (cid, stored, turns)
        for table, acknowledged in (("pattern_versions", acked.patterns), ("workflows", acked.workflows)):
            for name, version in acknowledged.items():
                versions = {v for (v,) in db.execute(f"SELECT version FROM {table} WHERE name = ?", (name,))}
                assert version in versions, (table, name, version, versions)
        runs = {r for (r,) in db.execute("SELECT run_id FROM runs")}
        assert set(acked.runs) <= runs, set(acked.runs) - runs
        keys = {k for (k,) in db.execute("SELECT id FROM api_keys")}
        assert set(acked.keys) <= keys, set(acked.keys) - keys
        for incident_id, note in acked.incidents.items():
            body = json.loads(db.execute("SELECT body FROM incidents WHERE id = ?", (incident_id,)).fetchone()[0])
            assert body["acknowledged_at"] is not None and body["note"] == note, body
    db.close()


async def serving(server: ServerProcess) -> bool:
    """Whether the server's current process runs and accepts connections."""
    if server.process is None or server.process.poll() is not None:
        return False
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.mark.timeout(400)  # eleven server starts, CPU-bound: a loaded machine takes its time
async def test_no_acknowledged_id_of_any_kind_is_lost_to_sigkill(server: ServerProcess) -> None:
    rng = random.Random(1504)
    acked = Acknowledged()
    incidents = await seed_incidents(server.database, 3 * KILLS)
    await anyio.to_thread.run_sync(server.start)
    done = anyio.Event()

    async def client(i: int) -> None:
        rounds = 0
        while not done.is_set():
            rounds += 1
            try:
                await client_round(server.url, f"c{i}-{rounds}", acked, incidents)
            except AssertionError:
                raise
            except Exception:  # noqa: BLE001 - the server was killed under this round; the next one retries
                await until(lambda: serving(server), 60, "the server serving again after a kill")

    async def key_maker() -> None:  # keys come from the short CLI command beside the server (a few: CPU)
        while not done.is_set() and len(acked.keys) < KEYS:
            created = await anyio.to_thread.run_sync(lambda: cli("keys", "create", f"k{len(acked.keys)}",
                                                                 database=server.database, config=server.config))
            assert created.returncode == 0, created.stderr
            acked.keys.append(created.stderr.split()[1])

    with anyio.fail_after(360):
        async with anyio.create_task_group() as tg:
            for i in range(CLIENTS):
                tg.start_soon(client, i)
            tg.start_soon(key_maker)
            for _ in range(KILLS):
                await acked.round_done.wait()  # a round of every kind done on this server before it dies
                await anyio.sleep(rng.uniform(0.0, 0.5))  # bounded-wait, pacing: a random point among the in-flight writes
                await anyio.to_thread.run_sync(server.kill)
                await anyio.to_thread.run_sync(server.start)
            done.set()
        await anyio.to_thread.run_sync(server.kill)  # the database is checked as the last kill left it

    assert server.kills == KILLS + 1
    assert_all_acknowledged_ids_are_stored(server.database, acked)
    assert acked.turns and acked.patterns and acked.workflows and acked.runs and acked.incidents and acked.keys
    await anyio.to_thread.run_sync(server.start)
    for cid in acked.turns:  # every acknowledged conversation continues through the server
        assert (await call(server.url, "orchestrate", prompt="still there?", continuation_id=cid))["continuation_id"]
    for run in acked.runs:
        assert (await call(server.url, "workflow_run", run_id=run))["run_id"] == run
    print(f"SIGKILL test: {server.kills} kills, {acked.count()} acknowledged ids ({len(acked.turns)} conversations, "
          f"{len(acked.runs)} runs, {len(acked.keys)} keys) all stored")


# -- 15.3: one hostile upstream reply among 20 concurrent callers ------------------------------------------------


async def test_one_hostile_reply_among_20_concurrent_callers_hurts_only_its_own(
        server: ServerProcess, upstream: Upstream) -> None:
    # One reply among the 20 is valid JSON carrying a lone surrogate; the store must survive it whether or not the
    # pool sanitizes replies first. Every reply waits a little, so the 20 writes meet in the store's batches.
    replies = [Behaviour(text=f"answer {i}", latency_s=0.2) for i in range(19)]
    replies.insert(7, Behaviour(text="bad \ud800 reply", latency_s=0.2))
    upstream.script("gpt-sim", *replies)
    server.start()
    outcomes: dict[int, dict | str] = {}

    async def caller(i: int) -> None:
        with anyio.fail_after(60):
            async with Client(server.url) as client:
                result = await client.call_tool("orchestrate", {"prompt": f"question {i}"})
        outcomes[i] = result.content[0].text if result.is_error else result.structured_content

    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(caller, i)
    answers = {i: o for i, o in outcomes.items() if isinstance(o, dict)}
    hostile = [i for i, o in answers.items() if "\ud800" in o["text"] or "\ufffd" in o["text"]]
    assert len([i for i in answers if i not in hostile]) == 19, outcomes  # only the hostile reply's caller may fail
    assert all(isinstance(o, dict) or "could not store" in o or "not valid Unicode" in o for o in outcomes.values())
    for i, answer in answers.items():
        if i in hostile:
            continue
        later = await call(server.url, "orchestrate", prompt="what did you say?",
                           continuation_id=answer["continuation_id"])
        assert later["continuation_id"] == answer["continuation_id"]
        sent = [m["content"] for m in upstream.requests[-1].body["messages"] if m["role"] != "system"]
        assert sent == [f"question {i}", answer["text"], "what did you say?"], sent
