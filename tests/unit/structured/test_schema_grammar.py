"""JSON Schema -> GBNF: what it accepts matches the schema (llama.cpp's grammar engine is the
oracle, jsonschema the independent validator), what it cannot enforce it refuses by name, and
llama.cpp parses every grammar it emits."""

from __future__ import annotations

import json
from typing import Any, Literal

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.lib._parsing._completions import type_to_response_format_param
from pydantic import BaseModel, Field

from appliance.structured.schema import MAX_REPEAT, UnsupportedSchema, schema_grammar
from tests.unit.structured.conftest import Oracle

_FORMATS = jsonschema.Draft202012Validator.FORMAT_CHECKER


def _valid(schema: Any, value: Any) -> bool:
    return jsonschema.Draft202012Validator(schema, format_checker=_FORMATS).is_valid(value)


OBJECT = {"type": "object", "additionalProperties": False,
          "properties": {"a": {"type": "integer"}, "b": {"type": "string"},
                         "c": {"type": "boolean"}},
          "required": ["b"]}
TREE = {"$defs": {"node": {"type": "object", "additionalProperties": False,
                           "properties": {"v": {"type": "integer"},
                                          "kids": {"type": "array",
                                                   "items": {"$ref": "#/$defs/node"}}},
                           "required": ["v", "kids"]}},
        "$ref": "#/$defs/node"}

# (schema, texts it must accept, texts it must refuse); each is checked by jsonschema too.
CASES: list[tuple[str, Any, list[str], list[str]]] = [
    ("object-optional", OBJECT,
     ['{"b": "x"}', '{"a": 1, "b": "x"}', '{"a": -7, "b": "", "c": true}',
      '{\n  "b": "x",\n  "c": false\n}', '{"b": "x", "c": true}'],
     ['{}', '{"a": 1}', '{"b": "x", "d": 1}', '{"b": 1}', '{"c": true, "b": "x"}',
      '{"b": "x",}', '"x"']),
    ("all-optional", {"type": "object", "properties": {"a": {"type": "null"}}},
     ['{}', '{"a": null}', '{ }'], ['{"a": 0}']),
    ("enum-const", {"type": "object", "additionalProperties": False,
                    "properties": {"k": {"enum": ["red", "green", 3, None]},
                                   "c": {"const": "fixed"}},
                    "required": ["k", "c"]},
     ['{"k": "red", "c": "fixed"}', '{"k": 3, "c": "fixed"}', '{"k": null, "c": "fixed"}'],
     ['{"k": "blue", "c": "fixed"}', '{"k": "red", "c": "other"}']),
    ("array-bounds", {"type": "array", "items": {"type": "number"}, "minItems": 1,
                      "maxItems": 3},
     ['[1]', '[1, 2.5, -3e2]', '[0.5,1,2]'], ['[]', '[1, 2, 3, 4]', '["a"]', '[1,]']),
    ("nullable-type-list", {"type": ["string", "null"]},
     ['"x"', 'null', '"a \\"quoted\\" \\u00e9 word"'], ['1', 'true']),
    ("any-of", {"anyOf": [{"type": "integer"}, {"type": "array", "items": {"type": "string"},
                                                 "maxItems": 2}]},
     ['12', '["a", "b"]', '[]'], ['1.5', '["a", "b", "c"]', '"a"']),
    ("recursive-ref", TREE,
     ['{"v": 1, "kids": []}', '{"v": 1, "kids": [{"v": 2, "kids": [{"v": 3, "kids": []}]}]}'],
     ['{"v": 1}', '{"v": 1, "kids": [{"v": 2}]}']),
    ("map", {"type": "object", "additionalProperties": {"type": "integer"}},
     ['{}', '{"x": 1, "y": 2}'], ['{"x": "1"}']),
    ("string-length", {"type": "string", "minLength": 2, "maxLength": 4},
     ['"ab"', '"abcd"', '"\u00e9\u00e9"'], ['"a"', '"abcde"']),
    ("formats", {"type": "object", "additionalProperties": False,
                 "properties": {"d": {"type": "string", "format": "date"},
                                "t": {"type": "string", "format": "date-time"},
                                "u": {"type": "string", "format": "uuid"},
                                "ip": {"type": "string", "format": "ipv4"}},
                 "required": ["d", "t", "u", "ip"]},
     ['{"d": "2024-12-31", "t": "2024-01-02T03:04:05Z", '
      '"u": "123e4567-e89b-12d3-a456-426614174000", "ip": "192.168.0.255"}',
      '{"d": "1999-02-28", "t": "2024-01-02T23:59:59.123+05:30", '
      '"u": "00000000-0000-0000-0000-000000000000", "ip": "0.0.0.0"}'],
     ['{"d": "2024-13-01", "t": "2024-01-02T03:04:05Z", '
      '"u": "123e4567-e89b-12d3-a456-426614174000", "ip": "1.2.3.4"}',
      '{"d": "2024-04-31", "t": "2024-01-02T03:04:05Z", '
      '"u": "123e4567-e89b-12d3-a456-426614174000", "ip": "1.2.3.4"}',
      '{"d": "2024-01-01", "t": "2024-01-02 03:04:05", '
      '"u": "123e4567-e89b-12d3-a456-426614174000", "ip": "1.2.3.4"}',
      '{"d": "2024-01-01", "t": "2024-01-02T03:04:05Z", "u": "123", "ip": "1.2.3.4"}',
      '{"d": "2024-01-01", "t": "2024-01-02T03:04:05Z", '
      '"u": "123e4567-e89b-12d3-a456-426614174000", "ip": "256.1.1.1"}']),
    ("anything", {}, ['{"x": [1, {"y": null}]}', '"s"', '-0.5e-3'], ['{"x": }', "nul"]),
    # Values that are prefixes of each other share the prefix tree's paths.
    ("enum-prefixes", {"enum": ["a", "ab", "abc", "b", 1, 10, 100, [1], [1, 2]]},
     ['"a"', '"ab"', '"abc"', '"b"', "1", "10", "100", "[1]", "[1, 2]"],
     ['"abcd"', '"ac"', '""', "1000", "0", "[1,2]", "[2]"]),
    ("any-of-consts", {"anyOf": [{"const": "x"}, {"const": "xy", "description": "d"},
                                 {"enum": [1, 2]}, {"const": None}]},
     ['"x"', '"xy"', "1", "2", "null"], ['"y"', '"xyz"', "3", "12"]),
]


@pytest.mark.parametrize(("schema", "good", "bad"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_grammar_accepts_exactly_what_the_schema_allows(oracle: Oracle, schema: Any,
                                                         good: list[str],
                                                         bad: list[str]) -> None:
    grammar = schema_grammar(schema)
    for text in good:
        assert _valid(schema, json.loads(text)), f"bad test case: {text}"
        assert oracle.accepts(grammar, text), text
    for text in bad:
        assert not oracle.accepts(grammar, text), text


def test_a_long_enum_is_a_prefix_tree_llama_cpp_masks_quickly(oracle: Oracle) -> None:
    """5,000 codes, as a clinic's list of diagnosis codes might be: as plain alternatives
    llama.cpp's grammar held one stack per code, and masking the vocabulary once took
    seconds (2.3 s for 4,096 values) in the engine thread; as a tree it takes
    milliseconds."""
    codes = [f"{chr(65 + i % 26)}{i // 26:02d}.{i % 7}" for i in range(5000)]
    for schema in ({"enum": codes}, {"anyOf": [{"const": c} for c in codes]}):
        grammar = schema_grammar(schema)
        for code in codes[::499] + codes[-1:]:
            assert oracle.accepts(grammar, json.dumps(code)), code
        for wrong in ("A00", "A00.7", "Z99.0", "A00.00", ""):
            assert not oracle.accepts(grammar, json.dumps(wrong)), wrong
        seconds = oracle.mask_seconds(grammar)
        assert seconds < 0.25, f"{seconds:.3f} s to mask the vocabulary once"


def test_narrowings_refuse_only_valid_but_unusual_values(oracle: Oracle) -> None:
    """29 February and numbers beyond 16 digits validate, but the grammar never makes them
    (documented); everything the grammar makes still validates."""
    date = schema_grammar({"type": "string", "format": "date"})
    assert _valid({"type": "string", "format": "date"}, "2024-02-29")
    assert not oracle.accepts(date, '"2024-02-29"')
    assert oracle.accepts(date, '"2024-02-28"')
    integer = schema_grammar({"type": "integer"})
    assert oracle.accepts(integer, "1234567890123456")
    assert not oracle.accepts(integer, "12345678901234567")
    assert not oracle.accepts(integer, "01")


class Address(BaseModel):
    street: str = Field(max_length=40)
    city: str
    postcode: str | None


class Patient(BaseModel):
    name: str
    age: int
    smoker: bool
    kind: Literal["inpatient", "outpatient"]
    home: Address
    previous: list[Address] = Field(max_length=3)
    weights: list[float]


def test_pydantic_schema_as_the_openai_client_sends_it(oracle: Oracle) -> None:
    schema = type_to_response_format_param(Patient)["json_schema"]["schema"]  # type: ignore[index]
    grammar = schema_grammar(schema)
    home = Address(street="1 Main St", city="Lyon", postcode=None)
    value = Patient(name="Ann", age=41, smoker=False, kind="outpatient", home=home,
                    previous=[home, home], weights=[61.5, 62.0])
    assert oracle.accepts(grammar, value.model_dump_json())
    assert oracle.accepts(grammar, value.model_dump_json(indent=2))
    too_many = value.model_copy(update={"previous": [home] * 4})
    assert not oracle.accepts(grammar, too_many.model_dump_json())
    assert not oracle.accepts(grammar, value.model_dump_json(exclude={"smoker"}))


@pytest.mark.parametrize(("schema", "keyword"), [
    ({"type": "string", "pattern": "^a+$"}, "pattern"),
    ({"type": "integer", "minimum": 0}, "minimum"),
    ({"type": "number", "multipleOf": 2}, "multipleOf"),
    ({"oneOf": [{"type": "string"}, {"type": "integer"}]}, "oneOf"),
    ({"allOf": [{"type": "string"}]}, "allOf"),
    ({"not": {"type": "string"}}, "not"),
    ({"type": "array", "uniqueItems": True}, "uniqueItems"),
    ({"type": "array", "prefixItems": [{"type": "string"}]}, "prefixItems"),
    ({"type": "array", "items": [{"type": "string"}]}, "items"),
    ({"type": "string", "format": "email"}, "format"),
    ({"type": "object", "properties": {"a": {"type": "string"}},
      "additionalProperties": {"type": "string"}}, "additionalProperties"),
    ({"type": "object", "properties": {}, "required": ["x"]}, "required"),
    ({"$ref": "https://example.com/schema.json"}, "$ref"),
    ({"$ref": "#/$defs/missing"}, "$ref"),
    ({"type": "array", "maxItems": MAX_REPEAT + 1}, "maxItems"),
    ({"type": "string", "minLength": 5, "maxLength": 2}, "minLength"),
    ({"type": "date"}, "type"),
    ({"type": "object", "properties": {"deep": {"type": "object", "properties": {
        "x": {"type": "string", "contentEncoding": "base64"}}}}}, "contentEncoding"),
])
def test_unsupported_keywords_are_refused_by_name(schema: Any, keyword: str) -> None:
    with pytest.raises(UnsupportedSchema) as info:
        schema_grammar(schema)
    assert info.value.keyword == keyword
    assert keyword in str(info.value)


def test_refusal_says_where_the_keyword_is() -> None:
    with pytest.raises(UnsupportedSchema) as info:
        schema_grammar({"type": "object", "properties": {"a": {"type": "array", "items": {
            "type": "string", "pattern": "x"}}}})
    assert info.value.path == "/properties/a/items"


def test_deep_nesting_is_refused_not_a_crash() -> None:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(200):
        schema = {"type": "array", "items": schema}
    with pytest.raises(UnsupportedSchema):
        schema_grammar(schema)


_LEAVES = st.sampled_from([
    {"type": "string"}, {"type": "integer"}, {"type": "number"}, {"type": "boolean"},
    {"type": "null"}, {"enum": ["a", "b", 1]}, {"const": {"k": [1, "\u00e9\"\\"]}},
    {"type": "string", "format": "date-time"}, {"type": "string", "maxLength": 3},
    {"type": ["string", "null"]}, {"type": "string", "pattern": "x"}, {},
])
_NAMES = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)),
                 min_size=1, max_size=8)


def _compound(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    props = st.dictionaries(_NAMES, children, max_size=4)
    return st.one_of(
        props.flatmap(lambda p: st.fixed_dictionaries({
            "type": st.just("object"), "properties": st.just(p),
            "required": st.lists(st.sampled_from(sorted(p)), unique=True) if p else st.just([]),
            "additionalProperties": st.booleans()})),
        st.fixed_dictionaries({"type": st.just("array"), "items": children},
                              optional={"minItems": st.integers(0, 3),
                                        "maxItems": st.integers(3, 6)}),
        st.lists(children, min_size=1, max_size=3).map(lambda xs: {"anyOf": xs}),
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.recursive(_LEAVES, _compound, max_leaves=12))
def test_every_emitted_grammar_parses_in_llama_cpp(oracle: Oracle, schema: Any) -> None:
    try:
        grammar = schema_grammar(schema)
    except UnsupportedSchema as exc:
        assert exc.keyword == "pattern"  # the only unsupported keyword generated here
        return
    assert oracle.parses(grammar), grammar
