"""The pattern registry over both stores: validation, versions, search, the built-in library."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from knowledge import InvalidPattern, Pattern, PatternNotFound, PatternRegistry, TemplateSyntaxError, validate_spec
from knowledge.library import builtin_patterns
from server.store import Store
from server.store.jsonfile import JSONFileStore
from server.store.memory import MemoryStore
from server.store.sqlite import SQLiteStore
from server.store.sqlite_patterns import BROAD_MATCHES

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        self.now += 60
        return self.now


@pytest.fixture(params=["memory", "sqlite", "json"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    factories = {"memory": MemoryStore, "sqlite": lambda: SQLiteStore(tmp_path / "k.db"),
                 "json": lambda: JSONFileStore(tmp_path / "k.json")}  # simple mode's store
    the_store: Store = factories[request.param]()
    yield the_store
    await the_store.aclose()


@pytest.fixture
def registry(store: Store) -> PatternRegistry:
    return PatternRegistry(store.patterns, clock=Clock())


def spec(name: str = "greet", template: str = "Hello {{ who }}", **fields):
    return validate_spec({"name": name, "description": fields.pop("description", "Greets someone"),
                          "template": template, **fields})


async def test_register_creates_version_one_and_identical_content_changes_nothing(registry: PatternRegistry) -> None:
    first = await registry.register(spec())
    again = await registry.register(spec())
    assert (first.changed, first.pattern.version) == (True, 1)
    assert (again.changed, again.pattern.version) == (False, 1)
    assert await registry.versions("greet") == [1]


async def test_update_bumps_the_version_and_old_versions_stay_readable(registry: PatternRegistry) -> None:
    v1 = (await registry.register(spec())).pattern
    v2 = (await registry.register(spec(template="Good morning {{ who }}, {{ mood }}"))).pattern
    assert v2.version == 2 and [v.name for v in v2.variables] == ["who", "mood"]
    assert (await registry.get("greet")).template == "Good morning {{ who }}, {{ mood }}"
    old = await registry.get("greet", 1)
    assert old.template == "Hello {{ who }}" and old.version == 1
    assert v2.created_at == v1.created_at and v2.updated_at > v1.updated_at
    assert await registry.versions("greet") == [1, 2]
    assert (await registry.render("greet", {"who": "Ada", "mood": "hi"})).version == 2


async def test_unknown_patterns_and_versions_are_clear_errors(registry: PatternRegistry) -> None:
    await registry.register(spec())
    with pytest.raises(PatternNotFound, match="no pattern named 'nope'.*search_patterns"):
        await registry.get("nope")
    with pytest.raises(PatternNotFound, match=r"has no version 7 \(versions: 1\)"):
        await registry.get("greet", 7)


@pytest.mark.parametrize("name", ["Code-Review", "-leading", "under_score", "a" * 65, "", "with space", "naïve",
                                  "../etc", "a/b"])
def test_invalid_names_are_refused_with_the_rule(name: str) -> None:
    with pytest.raises(InvalidPattern, match="name: must be a slug"):
        spec(name=name)


@pytest.mark.parametrize(("fields", "message"), [
    ({"template": "{{ a }} {{ b }}", "variables": [{"name": "a"}]}, "uses {{ b }} but 'b' is not declared"),
    ({"template": "{{ a }}", "variables": [{"name": "a"}, {"name": "z"}]}, "'z' is declared but the template never"),
    ({"template": "{{ a }}", "variables": [{"name": "a"}, {"name": "a"}]}, "'a' is declared twice"),
    ({"template": "{{ a }}", "variables": [{"name": "a", "required": True, "default": 1}]}, "cannot be required"),
    ({"metadata": {"tags": "security"}}, "tags must be a list"),
    ({"metadata": {"tags": ["no spaces"]}}, "is not a tag"),
    ({"metadata": {"domain": ["x"]}}, "domain must be a string"),
    ({"metadata": {"copilot": {"applyTo": "**"}}}, "cannot be a front-matter key"),
    ({"apply_to": ["a,b"]}, "apply_to"),
])
def test_invalid_patterns_say_what_is_wrong(fields: dict, message: str) -> None:
    with pytest.raises(InvalidPattern, match=message.replace("{", r"\{").replace("}", r"\}").replace("(", r"\(")):
        spec(**fields)


def test_template_syntax_errors_surface_from_validation() -> None:
    with pytest.raises(TemplateSyntaxError, match="line 1, column 7"):
        spec(template="Hello {{ who")


async def test_nothing_is_stored_when_a_pattern_is_invalid(registry: PatternRegistry) -> None:
    with pytest.raises(InvalidPattern):
        await registry.register(spec(template="{{ a }}", variables=[{"name": "b"}]))
    assert await registry.all() == []


async def test_listeners_hear_of_changes_only(registry: PatternRegistry) -> None:
    heard: list[tuple[str, int]] = []
    registry.add_listener(lambda p: heard.append((p.name, p.version)))
    await registry.register(spec())
    await registry.register(spec())
    await registry.register(spec(description="Greets warmly"))
    assert heard == [("greet", 1), ("greet", 2)]


async def test_search_ranks_name_over_description_over_template(registry: PatternRegistry) -> None:
    await registry.register(spec("in-template", "Please deploy {{ x }}", description="Does things"))
    await registry.register(spec("in-description", "Run {{ x }}", description="Helps deploy services"))
    await registry.register(spec("deploy-helper", "Run {{ x }}", description="Does things"))
    await registry.register(spec("unrelated", "Nothing {{ x }}", description="Other"))
    hits = await registry.search("deploy")
    assert [h.pattern.name for h in hits] == ["deploy-helper", "in-description", "in-template"]
    assert hits[0].score > hits[1].score > hits[2].score > 0


async def test_search_filters_by_every_tag_and_ignores_function_words(registry: PatternRegistry) -> None:
    await registry.register(spec("a", metadata={"tags": ["security", "review"]}, description="Review code"))
    await registry.register(spec("b", metadata={"tags": ["security"]}, description="Review code"))
    await registry.register(spec("c", metadata={"tags": ["Review"]}, description="Review code"))
    assert [h.pattern.name for h in await registry.search("a pattern for the review of code",
                                                          tags=["security", "REVIEW"])] == ["a"]
    assert [h.pattern.name for h in await registry.search("", tags=["review"])] == ["a", "c"]
    assert await registry.search("review", tags=["no such tag"]) == []


async def test_search_treats_the_last_word_as_a_prefix_and_lists_without_a_query(registry: PatternRegistry) -> None:
    await registry.register(spec("summarize-notes", description="Summarise meeting notes"))
    await registry.register(spec("zeta", description="Other"))
    assert [h.pattern.name for h in await registry.search("meeting summ")] == ["summarize-notes"]
    listed = await registry.search("", limit=1)
    assert [(h.pattern.name, h.score) for h in listed] == [("summarize-notes", 0.0)]


async def test_search_falls_back_to_patterns_matching_some_words(registry: PatternRegistry) -> None:
    await registry.register(spec("kubernetes-deploy", description="Deploy to kubernetes"))
    await registry.register(spec("terraform-plan", description="Plan terraform changes"))
    hits = await registry.search("kubernetes terraform")
    assert {h.pattern.name for h in hits} == {"kubernetes-deploy", "terraform-plan"}
    assert hits[0].score >= hits[1].score


async def test_search_sees_updates_at_once(registry: PatternRegistry) -> None:
    await registry.register(spec("notes", description="Release notes"))
    await registry.register(spec("notes", description="Meeting minutes"))
    assert await registry.search("release") == []
    assert [h.pattern.name for h in await registry.search("minutes")] == ["notes"]


async def test_sqlite_search_stems_words(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "stem.db")
    registry = PatternRegistry(store.patterns)
    await registry.register(spec("reviewer", description="Reviews pull requests"))
    assert [h.pattern.name for h in await registry.search("review request")] == ["reviewer"]
    await store.aclose()


async def test_sqlite_search_keeps_rare_words_and_names_when_a_word_is_everywhere(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "broad.db")
    registry = PatternRegistry(store.patterns)
    # Registered first (oldest), named after a word that more than BROAD_MATCHES later patterns also use.
    await registry.register(spec("checklist-writer", description="A template"))
    for i in range(BROAD_MATCHES + 20):
        await registry.register(spec(f"filler-{i:04d}", description="Builds a checklist for the team"))
    await registry.register(spec("rare-one", description="Checklist about zanzibar"))
    assert (await registry.search("checklist"))[0].pattern.name == "checklist-writer"
    assert [h.pattern.name for h in await registry.search("checklist zanzibar")] [:1] == ["rare-one"]
    await store.aclose()


async def test_sqlite_patterns_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "re.db"
    first = SQLiteStore(path)
    await PatternRegistry(first.patterns).register(spec())
    await PatternRegistry(first.patterns).register(spec(template="Hi {{ who }}"))
    await first.aclose()
    second = SQLiteStore(path)
    registry = PatternRegistry(second.patterns)
    assert (await registry.get("greet")).version == 2 and (await registry.get("greet", 1)).template == "Hello {{ who }}"
    assert [h.pattern.name for h in await registry.search("greets")] == ["greet"]
    await second.aclose()


async def test_concurrent_updates_get_distinct_versions(registry: PatternRegistry) -> None:
    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(registry.register, spec(template=f"Hello {{{{ who }}}} #{i}"))
    assert await registry.versions("greet") == list(range(1, 21))


async def test_builtin_library_loads_once_and_yields_to_registered_patterns(registry: PatternRegistry) -> None:
    library = builtin_patterns()
    assert {"code-review", "summarize", "decision-record", "release-notes", "threat-model"} <= {s.name for s in library}
    assert await registry.load_library(library) == sorted(s.name for s in library)
    assert await registry.load_library(library) == []
    review = await registry.get("code-review")
    assert review.source == "builtin" and review.version == 1
    mine = (await registry.register(spec("code-review", "My review of {{ diff }}"))).pattern
    assert (mine.version, mine.source) == (2, "registered")
    changed = [s.model_copy(update={"description": s.description + " (v2)"}) for s in library]
    stored = await registry.load_library(changed)
    assert "code-review" not in stored and "summarize" in stored
    assert (await registry.get("code-review")).template == "My review of {{ diff }}"
    assert (await registry.get("summarize")).version == 2


async def test_every_builtin_pattern_renders_with_its_required_variables(registry: PatternRegistry) -> None:
    await registry.load_library(builtin_patterns())
    for pattern in await registry.all():
        values = {v.name: f"<{v.name}>" for v in pattern.variables or () if v.required}
        text = (await registry.render(pattern.name, values)).text
        assert all(value in text for value in values.values()) and "{{" not in text
    guidance = [p for p in await registry.all() if not p.variables]
    assert guidance and all(isinstance(p, Pattern) and p.apply_to for p in guidance)
