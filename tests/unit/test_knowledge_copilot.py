"""GitHub Copilot export and import: documented file formats, a lossless round trip, hand-written files, the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from knowledge import CopilotFormatError, validate_spec
from knowledge.copilot import (
    MANIFEST_FILE,
    REPOSITORY_FILE,
    copilot_file,
    export_files,
    read_copilot_dir,
    write_export,
)
from knowledge.library import builtin_patterns
from server.app.cli import main

# Front-matter keys GitHub and VS Code document for each file type (see knowledge/copilot.py for the sources).
INSTRUCTION_KEYS = {"applyTo", "description", "name", "excludeAgent"}
PROMPT_KEYS = {"description", "name", "argument-hint", "agent", "mode", "model", "tools"}


def spec(**fields):
    return validate_spec({"description": "d", **fields})


def tricky_library():
    return [
        spec(name="review", description="Review: a change — with “quotes”, 'apostrophes' and a # hash",
             template="Review {{ diff }} for {{ user.name }} <{{user.email}}>.\nAgain {{ diff }}. "
                      "Literal \\{{ braces }} and JSON {\"a\": {\"b\": 1}} and ${selection} stay.",
             variables=[{"name": "diff", "description": "The diff: unified {format}"},
                        {"name": "user", "description": "Who asks", "required": False, "default": {"name": "x"}},],
             metadata={"domain": "engineering", "tags": ["code", "review"], "nested": {"a": [1, None, True]},
                       "copilot": {"agent": "agent", "tools": ["githubRepo", "search/codebase"]}},
             apply_to=["src/**"]),
        spec(name="python-style", description="Python conventions",
             template="# Python\n\n- Type hints everywhere.\n- No `\\{{` in f-strings without doubling.\n",
             apply_to=["**/*.py", "**/*.pyi"], metadata={"copilot": {"excludeAgent": "code-review"}}),
        spec(name="everywhere", description="Applies to every file", template="Be concise."),
        spec(name="explain", description="Explain the selection", template="Explain ${selection} simply.",
             metadata={"copilot_file": "prompt"}),
        spec(name="choose", description="With choices and a default",
             template="Tone: {{ tone }}", variables=[{"name": "tone", "default": "plain",
                                                     "choices": ["plain", "formal"]}]),
        *builtin_patterns(),
    ]


def front_matter(text: str) -> tuple[dict, str]:
    """Parse front matter the strict way the exporter promises: every value is JSON (hence YAML)."""
    assert text.startswith("---\n")
    head, body = text[4:].split("\n---\n", 1)
    fields = {}
    for line in head.splitlines():
        key, value = line.split(": ", 1)
        fields[key] = json.loads(value)
    return fields, body


def test_templates_export_as_prompt_files_with_input_variables() -> None:
    file = copilot_file(tricky_library()[0])
    assert file.path == ".github/prompts/review.prompt.md"
    fields, body = front_matter(file.content)
    assert set(fields) <= PROMPT_KEYS
    assert fields == {"description": tricky_library()[0].description, "agent": "agent",
                      "tools": ["githubRepo", "search/codebase"]}
    assert body.startswith("Review ${input:diff:The diff - unified (format)} for ${input:user.name:Who asks} "
                           "<${input:user.email}>.\nAgain ${input:diff}. ")
    assert "Literal {{ braces }}" in body and "${selection}" in body
    inputs = re.findall(r"\$\{input:([^}:]+)(?::([^}]*))?\}", body)
    assert [name for name, _ in inputs] == ["diff", "user.name", "user.email", "diff"]


def test_guidance_exports_as_instructions_files_with_apply_to_globs() -> None:
    library = {s.name: s for s in tricky_library()}
    file = copilot_file(library["python-style"])
    assert file.path == ".github/instructions/python-style.instructions.md"
    fields, body = front_matter(file.content)
    assert set(fields) <= INSTRUCTION_KEYS
    assert fields["applyTo"] == "**/*.py,**/*.pyi"  # GitHub: several globs, comma-separated, in one string
    assert fields["excludeAgent"] == "code-review"
    assert body == "# Python\n\n- Type hints everywhere.\n- No `{{` in f-strings without doubling.\n"
    assert front_matter(copilot_file(library["everywhere"]).content)[0]["applyTo"] == "**"
    assert copilot_file(library["explain"]).path == ".github/prompts/explain.prompt.md"


def test_repository_wide_file_is_plain_markdown_listing_instructions_and_prompts() -> None:
    files = {f.path: f.content for f in export_files(tricky_library())}
    overview = files[REPOSITORY_FILE]
    assert not overview.startswith("---")
    assert "`/code-review`" in overview and "`python-style` (applies to `**/*.py, **/*.pyi`)" in overview
    assert set(files) == {REPOSITORY_FILE, MANIFEST_FILE} | {copilot_file(s).path for s in tricky_library()}


def test_export_then_import_is_lossless(tmp_path: Path) -> None:
    library = tricky_library()
    write_export(library, tmp_path)
    assert read_copilot_dir(tmp_path) == sorted(library, key=lambda s: s.name)
    assert read_copilot_dir(tmp_path / ".github") == sorted(library, key=lambda s: s.name)


def test_an_edited_prompt_file_wins_and_keeps_what_the_manifest_knows(tmp_path: Path) -> None:
    write_export(tricky_library(), tmp_path)
    path = tmp_path / ".github/prompts/choose.prompt.md"
    path.write_text('---\ndescription: "Pick a tone"\n---\nTone: ${input:tone}, length: ${input:length:short or long}')
    imported = {s.name: s for s in read_copilot_dir(tmp_path)}["choose"]
    assert imported.description == "Pick a tone"
    assert imported.template == "Tone: {{ tone }}, length: {{ length }}"
    tone, length = imported.variables
    assert (tone.default, tone.choices) == ("plain", ("plain", "formal"))  # from the manifest
    assert (length.name, length.description, length.required) == ("length", "short or long", True)


def test_hand_written_copilot_files_import_without_a_manifest(tmp_path: Path) -> None:
    github = tmp_path / ".github"
    (github / "instructions" / "team").mkdir(parents=True)
    (github / "prompts").mkdir()
    (github / "instructions/team/React_Rules.instructions.md").write_text(
        "---\napplyTo: '**/*.tsx, src/**'   # components\nname: React\n---\nUse hooks; no {{ class }} components.\n")
    (github / "prompts/new-form.prompt.md").write_text(
        "---\nmode: agent\ntools:\n  - githubRepo\n  - 'search/codebase'\ndescription: New form\n---\n"
        "Create ${input:formName:MyForm} with fields ${input:fields}.")
    (github / "prompts/plain.prompt.md").write_text("Explain ${file}.")
    specs = {s.name: s for s in read_copilot_dir(tmp_path)}
    react = specs["react-rules"]
    assert react.apply_to == ("**/*.tsx", "src/**") and react.metadata == {"copilot": {"name": "React"}}
    assert react.template == "Use hooks; no \\{{ class }} components.\n" and not react.variables
    form = specs["new-form"]
    assert form.template == "Create {{ formName }} with fields {{ fields }}."
    assert [(v.name, v.description) for v in form.variables] == [("formName", "MyForm"), ("fields", "")]
    assert form.metadata == {"copilot": {"mode": "agent", "tools": ["githubRepo", "search/codebase"]}}
    plain = specs["plain"]
    assert plain.description == "Imported from .github/prompts/plain.prompt.md"
    assert copilot_file(plain).path == ".github/prompts/plain.prompt.md"  # stays an on-demand prompt


def test_files_that_cannot_round_trip_are_refused_with_the_file_named(tmp_path: Path) -> None:
    with pytest.raises(CopilotFormatError, match=r"prompts/bad\.prompt\.md: .*'\$\{input:'"):
        copilot_file(spec(name="bad", template="{{ a }} then ${input:b}"))
    github = tmp_path / ".github"
    (github / "prompts" / "x").mkdir(parents=True)
    (github / "prompts/same.prompt.md").write_text("One ${input:a}")
    (github / "prompts/x/same.prompt.md").write_text("Two ${input:a}")
    with pytest.raises(CopilotFormatError, match="also comes from"):
        read_copilot_dir(tmp_path)
    (github / "prompts/x/same.prompt.md").unlink()
    (github / "prompts/weird.prompt.md").write_text("Bad ${input:has space}")
    with pytest.raises(CopilotFormatError, match=r"weird\.prompt\.md: input variable 'has space'"):
        read_copilot_dir(tmp_path)
    with pytest.raises(CopilotFormatError, match="no .github folder"):
        read_copilot_dir(tmp_path / "elsewhere")


def test_cli_exports_and_imports_the_library(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["patterns", "export", "--format", "copilot", "--out", str(tmp_path / "repo"),
                 "--database", str(tmp_path / "a.db")]) == 0
    written = capsys.readouterr().out.split()
    assert str(tmp_path / "repo/.github/prompts/code-review.prompt.md") in written
    prompt = tmp_path / "repo/.github/prompts/code-review.prompt.md"
    prompt.write_text(prompt.read_text().replace("careful senior engineer", "strict reviewer"))
    assert main(["patterns", "import", str(tmp_path / "repo"), "--database", str(tmp_path / "b.db")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "code-review: version 2" in lines and "summarize: unchanged" in lines
    assert main(["patterns", "export", "--out", str(tmp_path / "x"), "--pattern", "nope",
                 "--database", str(tmp_path / "a.db")]) == 1
    assert "no pattern named nope" in capsys.readouterr().err
    assert main(["patterns", "import", str(tmp_path / "empty"), "--database", str(tmp_path / "b.db")]) == 1
