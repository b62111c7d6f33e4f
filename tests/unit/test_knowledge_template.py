"""Template rules: placeholders and dotted paths only, errors that name the variable, hostile input handled."""

from __future__ import annotations

import pytest

from knowledge import InvalidPattern, RenderError, TemplateSyntaxError, render_pattern, validate_spec
from knowledge.model import Pattern
from knowledge.template import MAX_TEMPLATE_CHARS, parse, render


def pattern(template: str, variables: list[dict] | None = None) -> Pattern:
    spec = validate_spec({"name": "p", "description": "d", "template": template, "variables": variables})
    return Pattern.model_construct(**dict(spec), version=1, source="registered", created_at="", updated_at="")


def test_placeholders_and_dotted_paths_are_filled_from_values() -> None:
    text = render(parse("Hi {{ user.name }} ({{user.address.city}}), {{ count }} new, ok={{ flag }}"),
                  {"user": {"name": "Ada", "address": {"city": "London"}}, "count": 3, "flag": True})
    assert text == "Hi Ada (London), 3 new, ok=true"


def test_values_are_inserted_once_and_never_read_as_template() -> None:
    text = render(parse("A={{ a }} B={{ b }}"), {"a": "{{ b }}", "b": "{{ __class__ }}"})
    assert text == "A={{ b }} B={{ __class__ }}"


def test_objects_lists_and_null_render_as_json_text_or_nothing() -> None:
    text = render(parse("{{ a }}|{{ b }}|{{ c }}"), {"a": {"k": [1, "x"]}, "b": [True, None], "c": None})
    assert text == '{"k": [1, "x"]}|[true, null]|'


def test_text_that_a_dotted_path_needs_is_decoded_as_a_json_object() -> None:
    assert render(parse("{{ user.name }}"), {"user": '{"name": "Ada"}'}) == "Ada"
    with pytest.raises(RenderError, match=r"needs 'user' to be a JSON object"):
        render(parse("{{ user.name }}"), {"user": '{"name": "Ada"}'}, decode_json_text=False)


def test_escaped_braces_and_lone_closing_braces_are_text() -> None:
    template = parse('literal \\{{ not a var }} and JSON {"a": {"b": 1}} }}')
    assert template.variables == ()
    assert render(template, {}) == 'literal {{ not a var }} and JSON {"a": {"b": 1}} }}'


@pytest.mark.parametrize("probe", [
    "{{ __class__ }}", "{{ x.__class__ }}", "{{ x.__globals__ }}", "{{ _private }}", "{{ x._y }}",
    "{{ x|upper }}", "{{ x() }}", "{{ x[0] }}", "{{ x + 1 }}", "{{ 'lit' }}", "{{ x.y.z.a.b.c.d.e.f }}",
    "{{ }}", "{{ self }} {{ a b }}", "{{ x }}{{ {{ y }} }}",
])
def test_anything_but_a_name_or_dotted_path_is_a_syntax_error(probe: str) -> None:
    with pytest.raises(TemplateSyntaxError, match="placeholder"):
        parse(probe)


def test_other_template_languages_syntax_is_plain_text() -> None:
    assert render(parse("{% if x %}{{ x }}{% endif %} ${x} {x}"), {"x": "1"}) == "{% if x %}1{% endif %} ${x} {x}"


def test_unbalanced_braces_are_errors_with_a_position() -> None:
    with pytest.raises(TemplateSyntaxError, match=r"never closed.*\(line 2, column 6\)"):
        parse("fine {{ a }}\nthen {{ b")
    with pytest.raises(TemplateSyntaxError, match=r"cannot nest \(line 1, column 1\)"):
        parse("{{ a {{ b }}")


def test_a_missing_required_variable_is_named() -> None:
    p = pattern("{{ diff }} {{ focus }}", [{"name": "diff"}, {"name": "focus", "default": "all"}])
    with pytest.raises(RenderError, match=r"needs variable 'diff' \(it takes: diff, focus\?\)") as caught:
        render_pattern(p, {"focus": "speed"})
    assert caught.value.variable == "diff"


def test_an_unknown_variable_is_named() -> None:
    p = pattern("{{ diff }}")
    with pytest.raises(RenderError, match="has no variable 'dif'") as caught:
        render_pattern(p, {"diff": "x", "dif": "typo"})
    assert caught.value.variable == "dif"


def test_a_missing_key_on_a_dotted_path_is_named() -> None:
    with pytest.raises(RenderError, match=r"'user' has no key 'email' \(needed by \{\{ user.email \}\}\)"):
        render_pattern(pattern("{{ user.email }}"), {"user": {"name": "Ada"}})


def test_defaults_fill_in_and_optional_variables_render_empty() -> None:
    p = pattern("[{{ a }}][{{ b }}][{{ c }}]",
                [{"name": "a"}, {"name": "b", "default": 2}, {"name": "c", "required": False}])
    assert render_pattern(p, {"a": "x"}) == "[x][2][]"


def test_values_that_are_not_json_are_refused_without_running_their_code() -> None:
    class Sneaky:
        def __str__(self) -> str:  # pragma: no cover - must never run
            raise AssertionError("str() ran on a value")

        __format__ = __repr__ = __str__

    with pytest.raises(RenderError, match="not a JSON value"):
        render(parse("{{ x }}"), {"x": Sneaky()})
    with pytest.raises(RenderError, match="JSON object"):
        render(parse("{{ x.y }}"), {"x": Sneaky()})


def test_rendered_output_is_capped_as_it_grows() -> None:
    with pytest.raises(RenderError, match="would pass 100 characters at x"):
        render(parse("{{ x }}" * 5), {"x": "y" * 30}, max_chars=100)


def test_a_one_megabyte_template_is_refused_before_parsing() -> None:
    with pytest.raises(InvalidPattern, match=f"limit is {MAX_TEMPLATE_CHARS:,}"):
        validate_spec({"name": "big", "description": "d", "template": "x" * 1_000_000})
    with pytest.raises(InvalidPattern, match="limit"):
        parse("{{ a }}" * 200_000)


def test_a_template_at_the_limit_full_of_braces_parses_in_linear_time() -> None:
    # Quadratic scanning would take minutes here; the suite's timeout fails the test if it regresses.
    text = ("{{ a }} { } }} \\{{ " * (MAX_TEMPLATE_CHARS // 20))[:MAX_TEMPLATE_CHARS - 10]
    template = parse(text)
    assert template.variables == ("a",)
    assert len(render(template, {"a": "v"})) > 50_000
    with pytest.raises(TemplateSyntaxError, match="never closed"):
        parse("{{ a }}" + "{{" * (MAX_TEMPLATE_CHARS // 2 - 10))
