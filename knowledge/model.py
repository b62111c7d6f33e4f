"""The pattern model: what a pattern is, what makes one valid, and how it maps to the store's record.

A pattern is a named prompt template (``{{ variable }}`` placeholders, see :mod:`knowledge.template`) with a
description, declared variables, free JSON metadata (``domain``, ``tags``, ``copilot`` …) and GitHub Copilot
``applyTo`` globs. Patterns without variables are *guidance* (exported as Copilot instruction files); the
others are *templates* (exported as Copilot prompt files).
"""

import json
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, field_validator, model_validator

from knowledge.errors import InvalidPattern
from knowledge.template import MAX_TEMPLATE_CHARS, parse
from server.store import PatternRecord

NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,63}$"
VARIABLE_PATTERN = r"^[A-Za-z][A-Za-z0-9_]{0,63}$"
TAG_PATTERN = r"^[a-z0-9][a-z0-9._+-]{0,39}$"
COPILOT_KEY_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]{0,39}$"
MAX_METADATA_CHARS = 20_000
MAX_DESCRIPTION_CHARS = 2_000
URI_PREFIX = "knowledge://patterns/"

Kind = Literal["template", "guidance"]
Source = Literal["builtin", "registered"]
Glob = Annotated[str, Field(min_length=1, max_length=256, pattern=r'^[^,"\n\r]+$')]


class Variable(BaseModel):
    """A declared template variable.

    ``required`` defaults to "no default given"; a variable with a default cannot be required. An optional
    variable without a default renders as empty text.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=VARIABLE_PATTERN, description="The name used in {{ name }} placeholders.")
    description: str = Field(default="", max_length=1_000, description="What to pass (shown to prompt users).")
    required: bool | None = Field(default=None, description="Default: true unless a default is given.")
    default: JsonValue = Field(default=None, description="Used when no value is passed.")
    choices: tuple[Annotated[str, Field(max_length=200)], ...] | None = Field(
        default=None, max_length=100, description="Known good values, offered as completions (not enforced).")

    @model_validator(mode="after")
    def _required_follows_default(self) -> "Variable":
        if self.required is None:
            object.__setattr__(self, "required", self.default is None)
        elif self.required and self.default is not None:
            raise ValueError(f"variable '{self.name}' has a default, so it cannot be required")
        return self


class PatternSpec(BaseModel):
    """What a caller registers (everything but the version and timestamps).

    Validation checks the name slug, parses the template, and matches declared variables against the
    placeholders actually used: every placeholder's variable must be declared and every declared variable
    used. With ``variables`` omitted they are inferred from the template (all required, in order of use).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN)
    description: str = Field(min_length=1, max_length=MAX_DESCRIPTION_CHARS)
    template: str = Field(min_length=1)
    variables: tuple[Variable, ...] | None = None
    metadata: dict[str, JsonValue] = Field(default_factory=dict)
    apply_to: tuple[Glob, ...] = Field(default=(), max_length=20)

    @field_validator("template")
    @classmethod
    def _template_size(cls, template: str) -> str:
        if len(template) > MAX_TEMPLATE_CHARS:  # before parsing: refuse big input cheaply
            raise ValueError(f"template is {len(template):,} characters; the limit is {MAX_TEMPLATE_CHARS:,}")
        return template

    @field_validator("metadata")
    @classmethod
    def _metadata_shape(cls, metadata: dict[str, Any]) -> dict[str, Any]:
        if len(json.dumps(metadata, ensure_ascii=False)) > MAX_METADATA_CHARS:
            raise ValueError(f"metadata is over {MAX_METADATA_CHARS:,} characters of JSON")
        tags = metadata.get("tags")
        if tags is not None:
            if not isinstance(tags, list) or len(tags) > 20 or not all(isinstance(t, str) for t in tags):
                raise ValueError("metadata.tags must be a list of at most 20 strings")
            bad = [t for t in tags if not _matches(TAG_PATTERN, t.lower())]
            if bad:
                raise ValueError(f"metadata.tags: {bad[0]!r} is not a tag (letters, digits, . _ + -; up to 40)")
        if "domain" in metadata and not (isinstance(metadata["domain"], str) and len(metadata["domain"]) <= 64):
            raise ValueError("metadata.domain must be a string of at most 64 characters")
        if metadata.get("copilot_file") not in (None, "prompt", "instructions"):
            raise ValueError('metadata.copilot_file must be "prompt" or "instructions"')
        copilot = metadata.get("copilot")
        if copilot is not None:
            if not isinstance(copilot, dict):
                raise ValueError("metadata.copilot must be an object of Copilot front-matter keys")
            for key, value in copilot.items():
                if not _matches(COPILOT_KEY_PATTERN, key) or key in ("applyTo", "description"):
                    raise ValueError(f"metadata.copilot: {key!r} cannot be a front-matter key here")
                if not _scalar_or_scalars(value):
                    raise ValueError(f"metadata.copilot.{key} must be text, a number, a boolean or a list of them")
        return metadata

    @model_validator(mode="after")
    def _variables_match_placeholders(self) -> "PatternSpec":
        used = parse(self.template).variables
        if self.variables is None:
            object.__setattr__(self, "variables", tuple(Variable(name=v) for v in used))
            return self
        declared = [v.name for v in self.variables]
        duplicate = next((n for n in declared if declared.count(n) > 1), None)
        if duplicate:
            raise ValueError(f"variable '{duplicate}' is declared twice")
        undeclared = [v for v in used if v not in declared]
        if undeclared:
            raise ValueError(f"the template uses {{{{ {undeclared[0]} }}}} but '{undeclared[0]}' is not declared in "
                             f"variables (declared: {', '.join(declared) or 'none'})")
        unused = [v for v in declared if v not in used]
        if unused:
            raise ValueError(f"variable '{unused[0]}' is declared but the template never uses {{{{ {unused[0]} }}}}")
        return self

    @property
    def tags(self) -> tuple[str, ...]:
        """Lower-cased, de-duplicated ``metadata.tags``."""
        return tuple(dict.fromkeys(t.lower() for t in self.metadata.get("tags") or ()))

    def to_record(self, *, source: Source, now: float) -> PatternRecord:
        """The store's record for this spec (version and creation time are the store's to assign)."""
        return PatternRecord(
            name=self.name, version=0, description=self.description, template=self.template,
            variables=tuple(v.model_dump() for v in self.variables or ()), metadata=dict(self.metadata),
            apply_to=tuple(self.apply_to), tags=self.tags, source=source, created_at=now, updated_at=now)


class Pattern(PatternSpec):
    """A stored pattern version, as the MCP surface shows it."""

    version: int = Field(ge=1)
    source: Source = "registered"
    created_at: str = Field(description="When version 1 was stored (ISO 8601, UTC).")
    updated_at: str = Field(description="When this version was stored (ISO 8601, UTC).")

    @property
    def kind(self) -> Kind:
        """``template`` (has variables) or ``guidance`` (none)."""
        return "template" if self.variables else "guidance"

    @property
    def uri(self) -> str:
        return URI_PREFIX + self.name

    @property
    def version_uri(self) -> str:
        return f"{URI_PREFIX}{self.name}/versions/{self.version}"

    @classmethod
    def from_record(cls, record: PatternRecord) -> "Pattern":
        """Rebuild from the store (trusted: validated when stored)."""
        return cls.model_construct(
            name=record.name, description=record.description, template=record.template,
            variables=tuple(Variable.model_construct(**{**v, "choices": None if v.get("choices") is None
                                                        else tuple(v["choices"])}) for v in record.variables),
            metadata=record.metadata, apply_to=record.apply_to, version=record.version, source=record.source,
            created_at=_iso(record.created_at), updated_at=_iso(record.updated_at))

    def spec(self) -> "PatternSpec":
        """The registrable part (for export and comparisons)."""
        return PatternSpec.model_construct(name=self.name, description=self.description, template=self.template,
                                           variables=self.variables, metadata=self.metadata, apply_to=self.apply_to)


def validate_spec(data: dict[str, Any]) -> "PatternSpec":
    """A :class:`PatternSpec` from plain data, with one readable error.

    Raises:
        InvalidPattern: naming the field and what is wrong with it (never echoing the value).
    """
    try:
        return PatternSpec.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_input=False, include_url=False):
            where = ".".join(str(part) for part in error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "string_pattern_mismatch" and where == "name":
                message = "must be a slug: lower-case letters, digits and '-', starting with a letter or digit, " \
                          "at most 64 characters (e.g. code-review)"
            problems.append(f"{where}: {message}" if where else message)
        raise InvalidPattern("invalid pattern: " + "; ".join(problems[:5]), pattern=data.get("name")
                             if isinstance(data.get("name"), str) else None) from None


def _matches(pattern: str, text: str) -> bool:
    return re.fullmatch(pattern, text) is not None


def _scalar_or_scalars(value: Any) -> bool:
    scalar = (str, int, float, bool)
    return isinstance(value, scalar) or isinstance(value, list) and all(isinstance(v, scalar) for v in value)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
