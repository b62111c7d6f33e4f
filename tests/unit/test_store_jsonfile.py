"""Simple mode's JSON-file store: patterns survive restarts, writes are atomic, bad files are refused untouched."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from knowledge import PatternRegistry
from knowledge.model import validate_spec
from server.store import PatternRecord, StorageError
from server.store.jsonfile import FORMAT, JSONFileStore, StateFileError

pytestmark = pytest.mark.anyio


def spec(template: str = "Hello {{ who }}"):
    return validate_spec({"name": "greet", "description": "Greets someone.", "template": template,
                          "metadata": {"tags": ["hello"]}})


async def test_patterns_and_their_versions_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "state" / "state.json"
    first = JSONFileStore(path)
    await PatternRegistry(first.patterns).register(spec())
    await PatternRegistry(first.patterns).register(spec("Hi {{ who }}"))
    await first.aclose()
    registry = PatternRegistry(JSONFileStore(path).patterns)
    assert (await registry.get("greet")).version == 2
    assert (await registry.get("greet", 1)).template == "Hello {{ who }}"
    assert [hit.pattern.name for hit in await registry.search("hello")] == ["greet"]
    document = json.loads(path.read_text())
    assert document["format"] == FORMAT and document["version"] == 1 and document["workflows"] == {}
    assert [v["version"] for v in document["patterns"]["greet"]] == [1, 2]


async def test_unchanged_content_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    store = JSONFileStore(path)
    await PatternRegistry(store.patterns).register(spec())
    before = path.stat().st_mtime_ns
    os.utime(path, ns=(before - 10**9, before - 10**9))
    outcome = await PatternRegistry(store.patterns).register(spec())
    assert not outcome.changed and path.stat().st_mtime_ns == before - 10**9


async def test_saved_workflows_persist_and_unknown_keys_are_kept_across_writes(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"format": FORMAT, "version": 1, "patterns": {}, "later": {"x": 1}}))
    store = JSONFileStore(path)
    definition = {"name": "nightly", "steps": [{"id": "a", "kind": "pattern", "with": {"pattern": "p"}}]}
    record, changed = await store.workflows.put_workflow("nightly", definition, ts=10.0)
    assert (record.version, changed) == (1, True)
    assert (await store.workflows.put_workflow("nightly", definition, ts=11.0))[1] is False
    await PatternRegistry(store.patterns).register(spec())
    document = json.loads(path.read_text())
    assert document["later"] == {"x": 1} and document["workflows"]["nightly"]["definition"] == definition
    reopened = JSONFileStore(path)
    assert await reopened.workflows.get_workflow("nightly") == record
    assert [w.name for w in await reopened.workflows.list_workflows()] == ["nightly"]


@pytest.mark.parametrize("content", ["{not json", "[]", '{"format": "other"}',
                                     json.dumps({"format": FORMAT, "version": 99}),
                                     json.dumps({"format": FORMAT, "version": 1, "patterns": {"a": [{"name": "b"}]}}),
                                     json.dumps({"format": FORMAT, "version": 1, "workflows": {"w": [{"steps": []}]}})],
                         ids=["invalid-json", "not-an-object", "other-format", "newer-version", "bad-record",
                              "bad-workflow"])
def test_an_unreadable_file_is_refused_and_left_as_it_is(tmp_path: Path, content: str) -> None:
    path = tmp_path / "state.json"
    path.write_text(content)
    with pytest.raises(StateFileError, match=str(path)):
        JSONFileStore(path)
    assert path.read_text() == content


async def test_a_failed_write_stores_nothing_and_leaves_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    path = folder / "state.json"
    store = JSONFileStore(path)
    await PatternRegistry(store.patterns).register(spec())
    saved = path.read_text()
    folder.rename(tmp_path / "aside")
    folder.write_text("a file where the data folder was: no write can succeed (even as root)")
    with pytest.raises(StorageError, match=r"could not store pattern 'greet': .* \(cannot open\)"):
        await PatternRegistry(store.patterns).register(spec("Changed {{ who }}"))
    folder.unlink()
    (tmp_path / "aside").rename(folder)
    assert await store.patterns.pattern_versions("greet") == [1]
    assert (await store.patterns.get_pattern("greet")).template == "Hello {{ who }}"
    assert path.read_text() == saved
    assert [p.name for p in folder.iterdir()] == ["state.json"]  # no temporary file left behind


async def test_a_record_round_trips_exactly(tmp_path: Path) -> None:
    record = PatternRecord(name="r", version=1, description="d", template="t {{ a.b }}",
                           variables=({"name": "a", "description": "", "required": True, "default": None},),
                           metadata={"domain": "x", "tags": ["t"], "nested": {"k": [1, 2.5, None]}},
                           apply_to=("**/*.py",), tags=("t",), source="registered", created_at=5.0, updated_at=5.0)
    first = JSONFileStore(tmp_path / "s.json")
    stored, _ = await first.patterns.put_pattern(record)
    assert await JSONFileStore(tmp_path / "s.json").patterns.get_pattern("r") == stored
