"""GitHub Copilot files from patterns, and patterns back from Copilot files, losslessly.

Formats, as GitHub and VS Code document them:

- Repository-wide instructions: ``.github/copilot-instructions.md``, plain Markdown without front matter.
  (docs.github.com, "Adding repository custom instructions for GitHub Copilot".)
- Path-specific instructions: ``.github/instructions/NAME.instructions.md`` (sub-folders allowed), a YAML
  front-matter block with ``applyTo``: glob syntax, several globs separated by commas
  (``applyTo: "**/*.ts,**/*.tsx"``; ``"**"`` for all files); optional ``excludeAgent``. (docs.github.com,
  "Creating path-specific custom instructions", ``data/reusables/copilot/custom-instructions-path.md``;
  VS Code adds optional ``name`` and ``description``.)
- Prompt files: ``.github/prompts/NAME.prompt.md``, optional front matter with ``description``, ``name``,
  ``argument-hint``, ``agent`` (formerly ``mode``), ``model``, ``tools``; input variables in the body as
  ``${input:name}`` or ``${input:name:placeholder}``. (code.visualstudio.com/docs/copilot/customization/
  prompt-files.)

Mapping: a pattern with variables (a *template*) becomes a prompt file, each ``{{ path }}`` an
``${input:path}`` (the variable's description as placeholder, on first use); a pattern without variables
(*guidance*) becomes an instructions file with ``applyTo`` set to its globs (``"**"`` when it has none).
Other front-matter keys come from ``metadata.copilot``. The repository-wide file is an overview of the
instruction and prompt files (generated; import skips it).

What the Copilot files cannot carry (variable defaults and required flags, metadata, the template's exact
spelling) goes into a manifest, ``.github/ai-orchestration-patterns.json``. Import takes a pattern from the
manifest when its file is exactly what exporting that pattern writes; otherwise (the file was edited, or
written by hand) from the file, with the manifest filling in what the file does not say.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knowledge.errors import CopilotFormatError, InvalidPattern
from knowledge.frontmatter import FrontMatterError, dump, split
from knowledge.model import PatternSpec, Variable, validate_spec
from knowledge.template import MAX_TEMPLATE_CHARS, Placeholder, parse

GITHUB = ".github"
REPOSITORY_FILE = ".github/copilot-instructions.md"
MANIFEST_FILE = ".github/ai-orchestration-patterns.json"
_INPUT = re.compile(r"\$\{input:([^}:]*)(?::([^}]*))?\}")
_PLACEHOLDER_CHARS = 80
_MAX_FILE_BYTES = 4 * MAX_TEMPLATE_CHARS  # UTF-8 takes up to four bytes a character


@dataclass(frozen=True, slots=True)
class CopilotFile:
    """One file to write: ``path`` relative to the repository root, and its text."""

    path: str
    content: str


def is_prompt_file(spec: PatternSpec) -> bool:
    """Whether the pattern exports as a prompt file: it has variables, or ``metadata.copilot_file`` says so
    (a prompt file without inputs, imported from Copilot, stays an on-demand prompt)."""
    return bool(spec.variables) or spec.metadata.get("copilot_file") == "prompt"


def copilot_path(spec: PatternSpec) -> str:
    """Where the pattern's Copilot file goes, relative to the repository root."""
    if is_prompt_file(spec):
        return f"{GITHUB}/prompts/{spec.name}.prompt.md"
    return f"{GITHUB}/instructions/{spec.name}.instructions.md"


def copilot_file(spec: PatternSpec) -> CopilotFile:
    """The pattern as a Copilot prompt file (template) or instructions file (guidance).

    Raises:
        CopilotFormatError: the template's text contains ``${input:`` literally, which a prompt file would
            read as a variable (no escape exists in that format).
    """
    path = copilot_path(spec)
    extra = [(k, v) for k, v in (spec.metadata.get("copilot") or {}).items()]
    template = parse(spec.template)
    if not is_prompt_file(spec):
        front = [("applyTo", ",".join(spec.apply_to) or "**"), ("description", spec.description), *extra]
        body = "".join(s for s in template.segments if isinstance(s, str))
        return CopilotFile(path, dump(front) + body)
    descriptions = {v.name: v.description for v in spec.variables}
    seen: set[str] = set()
    parts = []
    for segment in template.segments:
        if isinstance(segment, str):
            if "${input:" in segment:
                raise CopilotFormatError("the template's text contains '${input:', which a Copilot prompt file "
                                         "would read as a variable", path=path, pattern=spec.name)
            parts.append(segment)
            continue
        parts.append(_input(segment, descriptions.get(segment.variable, ""), first=segment.variable not in seen))
        seen.add(segment.variable)
    return CopilotFile(path, dump([("description", spec.description), *extra]) + "".join(parts))


def _input(placeholder: Placeholder, description: str, *, first: bool) -> str:
    # A placeholder ends at the first "}" and VS Code splits on ":", so neither may appear in it.
    cleaned = description.translate(str.maketrans({"{": "(", "}": ")", ":": " -"}))
    hint = " ".join(cleaned.split())[:_PLACEHOLDER_CHARS].strip() if first else ""
    return f"${{input:{placeholder.dotted}:{hint}}}" if hint else f"${{input:{placeholder.dotted}}}"


def repository_instructions(specs: Iterable[PatternSpec]) -> str:
    """The repository-wide ``.github/copilot-instructions.md``: what the instruction and prompt files cover."""
    specs = sorted(specs, key=lambda s: s.name)
    guidance = [s for s in specs if not is_prompt_file(s)]
    templates = [s for s in specs if is_prompt_file(s)]
    lines = ["# Copilot instructions", "",
             "<!-- Generated by ai-orchestration-mcp from its pattern library: change the patterns "
             "(register_pattern), not this file. -->", ""]
    if not specs:
        return "\n".join(lines + ["No patterns are exported yet.", ""])
    if guidance:
        lines += ["## Instructions for specific files", "",
                  "These files in `.github/instructions/` apply automatically to the files their globs match:", ""]
        lines += [f"- `{s.name}` (applies to `{', '.join(s.apply_to) or '**'}`): {_one_line(s.description)}"
                  for s in guidance]
        lines.append("")
    if templates:
        lines += ["## Prompt files", "",
                  "Reusable prompts in `.github/prompts/`; run one in Copilot Chat by typing `/` and its name:", ""]
        for s in templates:
            inputs = ", ".join(f"`{v.name}`" + ("" if v.required else " (optional)") for v in s.variables or ())
            lines.append(f"- `/{s.name}`: {_one_line(s.description)}" + (f" Inputs: {inputs}." if inputs else ""))
        lines.append("")
    return "\n".join(lines)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def export_files(specs: Iterable[PatternSpec]) -> list[CopilotFile]:
    """Every file of a Copilot export: one per pattern, the repository-wide file and the manifest.

    Raises:
        CopilotFormatError: a pattern cannot be written as a Copilot file (see :func:`copilot_file`).
    """
    specs = sorted(specs, key=lambda s: s.name)
    files = [copilot_file(s) for s in specs]
    manifest = {"generator": "ai-orchestration-mcp", "format": 1,
                "patterns": [s.model_dump(mode="json") for s in specs]}
    files.append(CopilotFile(REPOSITORY_FILE, repository_instructions(specs)))
    files.append(CopilotFile(MANIFEST_FILE, json.dumps(manifest, ensure_ascii=False, indent=2) + "\n"))
    return files


def write_export(specs: Iterable[PatternSpec], out: Path) -> list[Path]:
    """Write :func:`export_files` under ``out`` (each file atomically). Returns the paths written."""
    written = []
    for file in export_files(specs):
        target = out / file.path
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        partial.write_text(file.content, encoding="utf-8")
        partial.replace(target)
        written.append(target)
    return written


def read_copilot_dir(folder: Path) -> list[PatternSpec]:
    """Patterns from a repository's (or its ``.github`` folder's) Copilot instruction and prompt files.

    Raises:
        CopilotFormatError: no ``.github`` folder, an unreadable file, two files for one name, or a file that
            does not make a valid pattern (each names the file).
    """
    github = folder / GITHUB if (folder / GITHUB).is_dir() else folder if folder.name == GITHUB else None
    if github is None:
        raise CopilotFormatError("no .github folder here (pass the repository root or its .github folder)",
                                 path=str(folder))
    manifest = _manifest(github)
    found: dict[str, tuple[str, PatternSpec]] = {}
    sources = [(p, "instructions") for p in sorted((github / "instructions").rglob("*.instructions.md"))]
    sources += [(p, "prompts") for p in sorted((github / "prompts").rglob("*.prompt.md"))]
    for path, kind in sources:
        relative = f"{GITHUB}/{path.relative_to(github).as_posix()}"
        spec = _read_file(path, relative, kind, manifest)
        if spec.name in found:
            raise CopilotFormatError(f"pattern '{spec.name}' also comes from {found[spec.name][0]}", path=relative)
        found[spec.name] = (relative, spec)
    return [spec for _, spec in sorted(found.values(), key=lambda item: item[1].name)]


def _manifest(github: Path) -> dict[str, PatternSpec]:
    path = github / Path(MANIFEST_FILE).name
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {spec.name: spec for spec in (validate_spec(item) for item in data.get("patterns", []))}
    except (ValueError, AttributeError, InvalidPattern) as exc:
        raise CopilotFormatError(f"unreadable manifest: {exc}", path=MANIFEST_FILE) from exc


def _read_file(path: Path, relative: str, kind: str, manifest: dict[str, PatternSpec]) -> PatternSpec:
    suffix = ".instructions.md" if kind == "instructions" else ".prompt.md"
    name = _slug(path.name[: -len(suffix)], relative)
    if path.stat().st_size > _MAX_FILE_BYTES:
        raise CopilotFormatError(f"larger than {_MAX_FILE_BYTES:,} bytes: not a pattern", path=relative)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CopilotFormatError(f"unreadable: {exc}", path=relative) from None
    known = manifest.get(name)
    if known is not None and copilot_path(known).endswith(suffix):
        try:
            if copilot_file(known).content == text:
                return known  # the file is exactly what this pattern exports: nothing was lost or changed
        except CopilotFormatError:
            pass
    try:
        front, body = split(text)
    except FrontMatterError as exc:
        raise CopilotFormatError(str(exc), path=relative, pattern=name) from None
    try:
        return _from_file(name, kind, front, body, known, relative)
    except InvalidPattern as exc:
        raise CopilotFormatError(str(exc), path=relative, pattern=name) from None


def _from_file(name: str, kind: str, front: dict[str, Any], body: str, known: PatternSpec | None,
               relative: str) -> PatternSpec:
    description = front.pop("description", None)
    apply_to_text = front.pop("applyTo", None)
    copilot = {k: v for k, v in front.items() if v is not None}
    metadata = {k: v for k, v in (known.metadata if known else {}).items() if k != "copilot"}
    if copilot:
        metadata["copilot"] = copilot
    if kind == "instructions":
        template, variables = body.replace("{{", "\\{{"), []
        globs = [g.strip() for g in str(apply_to_text or "").split(",") if g.strip()]
        exported = ",".join(known.apply_to) or "**" if known else None
        apply_to = list(known.apply_to) if known and (apply_to_text or "**") == exported else globs
    else:
        template, variables = _template_from_prompt(body, known, relative)
        apply_to = list(known.apply_to) if known else []
        if not variables:
            metadata["copilot_file"] = "prompt"
    return validate_spec({
        "name": name,
        "description": str(description).strip() if description else known.description if known
        else f"Imported from {relative}",
        "template": template, "variables": variables, "metadata": metadata, "apply_to": apply_to})


def _template_from_prompt(body: str, known: PatternSpec | None, relative: str) -> tuple[str, list[dict[str, Any]]]:
    declared = {v.name: v for v in known.variables or ()} if known else {}
    variables: dict[str, Variable] = {}
    parts, cursor = [], 0
    for match in _INPUT.finditer(body):
        parts.append(body[cursor:match.start()].replace("{{", "\\{{"))
        path, hint = match.group(1).strip(), (match.group(2) or "").strip()
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z0-9][A-Za-z0-9_-]*)*", path):
            raise CopilotFormatError(f"input variable '{path}' cannot be a pattern variable (use letters, digits "
                                     "and _, starting with a letter)", path=relative)
        root = path.split(".")[0]
        if root not in variables:
            variables[root] = declared.get(root) or Variable(name=root, description=hint)
        parts.append(f"{{{{ {path} }}}}")
        cursor = match.end()
    parts.append(body[cursor:].replace("{{", "\\{{"))
    return "".join(parts), [v.model_dump() for v in variables.values()]


def _slug(stem: str, relative: str) -> str:
    slug = re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9-]", "-", stem.lower())).strip("-")[:64]
    if not slug:
        raise CopilotFormatError("the file name gives no usable pattern name", path=relative)
    return slug
