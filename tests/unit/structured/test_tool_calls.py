"""Tool calls: each syntax's parser, the streaming splitter (any split of the text reads the
same as the whole), the syntax a template teaches, and the grammar of forced calls (llama.cpp
accepts valid calls in each syntax and refuses invalid ones)."""

from __future__ import annotations

import json
import random

import pytest

from appliance.engine.chat import ToolCall
from appliance.structured.call_stream import CallSplitter, Piece
from appliance.structured.spec import Function
from appliance.structured.tool_grammar import (
    MAX_CALLS,
    UnsupportedToolSchema,
    calls_grammar,
)
from appliance.structured.toolcalls import (
    CallFormat,
    ToolSyntax,
    detect_syntax,
    hermes_markup,
    parse_calls,
)
from tests.unit.structured.conftest import Oracle

NAMES = frozenset({"get_weather", "get_time"})
HERMES = CallFormat("hermes", NAMES)
LLAMA3 = CallFormat("llama3", NAMES)
MISTRAL = CallFormat("mistral", NAMES)


def _calls(calls: tuple[ToolCall, ...]) -> list[tuple[str, dict[str, object]]]:
    return [(c.name, json.loads(c.arguments)) for c in calls]


# (format, model output, expected content, expected calls)
PARSE_CASES: list[tuple[str, CallFormat, str, str, list[tuple[str, dict[str, object]]]]] = [
    ("hermes-one", HERMES, '<tool_call>\n{"name": "get_weather", "arguments": {"city": '
     '"Paris"}}\n</tool_call>', "", [("get_weather", {"city": "Paris"})]),
    ("hermes-two-and-text", HERMES, 'Let me check.\n<tool_call>{"name": "get_weather", '
     '"arguments": {"city": "Oslo"}}</tool_call>\n<tool_call>{"name": "get_time", '
     '"arguments": {"city": "Oslo"}}</tool_call>', "Let me check.",
     [("get_weather", {"city": "Oslo"}), ("get_time", {"city": "Oslo"})]),
    ("hermes-string-arguments", HERMES, '<tool_call>{"name": "get_time", "arguments": '
     '"{\\"city\\": \\"Rome\\"}"}</tool_call>', "", [("get_time", {"city": "Rome"})]),
    ("hermes-unclosed-at-end", HERMES, '<tool_call>{"name": "get_time", "arguments": {}}',
     "", [("get_time", {})]),
    ("hermes-unknown-function", HERMES, '<tool_call>{"name": "rm_rf", "arguments": {}}'
     '</tool_call>', '<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>', []),
    ("hermes-broken-json", HERMES, 'Sure <tool_call>{"name": "get_time", "arguments": {'
     '</tool_call>', 'Sure <tool_call>{"name": "get_time", "arguments": {</tool_call>', []),
    ("hermes-plain-text", HERMES, "It is sunny in Paris.", "It is sunny in Paris.", []),
    ("llama3-one", LLAMA3, '{"name": "get_weather", "parameters": {"city": "Lima"}}', "",
     [("get_weather", {"city": "Lima"})]),
    ("llama3-python-tag-two", LLAMA3, '<|python_tag|>{"name": "get_time", "parameters": '
     '{"city": "A"}}; {"name": "get_time", "parameters": {"city": "B"}}', "",
     [("get_time", {"city": "A"}), ("get_time", {"city": "B"})]),
    ("llama3-json-answer-is-content", LLAMA3, '{"answer": 42}', '{"answer": 42}', []),
    ("llama3-text", LLAMA3, "Hello there", "Hello there", []),
    ("mistral-marker", MISTRAL, 'OK [TOOL_CALLS][{"name": "get_time", "arguments": '
     '{"city": "Kyiv"}}]', "OK", [("get_time", {"city": "Kyiv"})]),
    ("mistral-marker-dropped", MISTRAL, '[{"name": "get_weather", "arguments": {"city": '
     '"Bern"}}, {"name": "get_time", "arguments": {}}]', "",
     [("get_weather", {"city": "Bern"}), ("get_time", {})]),
    ("mistral-list-answer-is-content", MISTRAL, "[1, 2, 3]", "[1, 2, 3]", []),
]


@pytest.mark.parametrize(("fmt", "text", "content", "calls"), [c[1:] for c in PARSE_CASES],
                         ids=[c[0] for c in PARSE_CASES])
def test_parsers_read_each_syntax(fmt: CallFormat, text: str, content: str,
                                  calls: list[tuple[str, dict[str, object]]]) -> None:
    parsed = parse_calls(text, fmt)
    assert parsed.content == content
    assert _calls(parsed.calls) == calls
    assert all(c.id.startswith("call_") for c in parsed.calls)
    assert len({c.id for c in parsed.calls}) == len(parsed.calls)


def test_only_the_first_call_counts_without_parallel_calls() -> None:
    text = PARSE_CASES[1][2]
    parsed = parse_calls(text, CallFormat("hermes", NAMES, parallel=False))
    assert _calls(parsed.calls) == [("get_weather", {"city": "Oslo"})]


def _split(fmt: CallFormat, text: str, sizes: list[int]) -> tuple[str, list[Piece]]:
    splitter, pieces, pos = CallSplitter(fmt), [], 0
    for size in sizes:
        pieces += splitter.feed(text[pos:pos + size])
        pos += size
    pieces += splitter.feed(text[pos:]) + splitter.finish()
    content = "".join(p for p in pieces if isinstance(p, str))
    return content, [p for p in pieces if not isinstance(p, str)]


@pytest.mark.parametrize(("fmt", "text", "content", "calls"), [c[1:] for c in PARSE_CASES],
                         ids=[c[0] for c in PARSE_CASES])
def test_splitter_reads_any_split_as_the_whole(fmt: CallFormat, text: str, content: str,
                                               calls: list[tuple[str, dict[str, object]]]
                                               ) -> None:
    rng = random.Random(len(text))
    whole = _split(fmt, text, [len(text)])
    assert _calls(tuple(whole[1])) == calls  # type: ignore[arg-type]
    for _ in range(20):
        sizes = [rng.randint(1, 6) for _ in range(len(text))]
        got = _split(fmt, text, sizes)
        assert got[0] == whole[0]
        assert _calls(tuple(got[1])) == calls  # type: ignore[arg-type]


def test_splitter_releases_content_before_it_could_be_a_call() -> None:
    splitter = CallSplitter(HERMES)
    assert splitter.feed("It is ") == ["It is"]
    assert splitter.feed("sunny <tool") == [" sunny"]  # "<tool" may open a call: held
    assert splitter.feed("kit>") == [" <toolkit>"]
    assert splitter.feed('<tool_call>{"name": "get_time", "arguments": {}}') == []
    pieces = splitter.feed("</tool_call>\n")
    assert [p.name for p in pieces if isinstance(p, ToolCall)] == ["get_time"]
    assert splitter.finish() == []  # (the whitespace after a call is not content)


def test_plain_answers_keep_their_whitespace() -> None:
    assert _split(HERMES, "  Hello\n\nworld  \n", [3, 3, 3]) == ("  Hello\n\nworld  \n", [])


def test_hermes_markup_reads_back_as_the_same_calls() -> None:
    calls = (ToolCall("call_1", "get_weather", '{"city":"Paris \\"FR\\""}'),
             ToolCall("call_2", "get_time", "{}"))
    parsed = parse_calls("Text first. " + hermes_markup(calls), HERMES)
    assert parsed.content == "Text first."
    assert [(c.name, c.arguments) for c in parsed.calls] == [(c.name, c.arguments)
                                                             for c in calls]


HERMES_TEMPLATE = ("{%- if tools %}<tools>{% for t in tools %}{{ t | tojson }}{% endfor %}"
                   "</tools>{% endif %}{% for m in messages %}{{ m.content }}"
                   "{% for c in m.tool_calls or [] %}<tool_call>{{ c.function | tojson }}"
                   "</tool_call>{% endfor %}{% endfor %}")


@pytest.mark.parametrize(("source", "syntax"), [
    (HERMES_TEMPLATE, "hermes"),
    ("{% for m in messages %}{% if m.tool_calls %}[TOOL_CALLS]{% endif %}{% endfor %}",
     "mistral"),
    ("{%- if tools %}<|start_header_id|>ipython<|end_header_id|>{% endif %}", "llama3"),
    ("{% for m in messages %}{{ m.content }}{% endfor %}", "hermes"),
])
def test_syntax_is_read_from_the_template(source: str, syntax: ToolSyntax) -> None:
    assert detect_syntax(source) == syntax


WEATHER = Function("get_weather", "The weather", {
    "type": "object", "additionalProperties": False,
    "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
    "required": ["city", "unit"]}, "")
TIME = Function("get_time", "", None, "")


@pytest.mark.parametrize(("syntax", "good", "bad"), [
    ("hermes",
     ['<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "c"}}'
      '</tool_call>',
      '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>\n<tool_call>'
      '{"name": "get_time", "arguments": {}}</tool_call>'],
     ['<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>',
      '<tool_call>{"name": "rm", "arguments": {}}</tool_call>',
      'Sure! <tool_call>{"name": "get_time", "arguments": {}}</tool_call>',
      '<tool_call>{"name": "get_time", "arguments": {"x": 1}}</tool_call>']),
    ("llama3",
     ['{"name": "get_weather", "parameters": {"city": "Oslo", "unit": "f"}}',
      '{"name": "get_time", "parameters": {}}; {"name": "get_time", "parameters": {}}'],
     ['{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "f"}}']),
    ("mistral",
     ['[TOOL_CALLS][{"name": "get_time", "arguments": {}}, {"name": "get_weather", '
      '"arguments": {"city": "Oslo", "unit": "c"}}]'],
     ['[{"name": "get_time", "arguments": {}}]']),
])
def test_forced_calls_grammar_in_each_syntax(oracle: Oracle, syntax: ToolSyntax,
                                             good: list[str], bad: list[str]) -> None:
    grammar = calls_grammar([WEATHER, TIME], syntax, parallel=True)
    fmt = CallFormat(syntax, NAMES)
    for text in good:
        assert oracle.accepts(grammar, text), text
        assert parse_calls(text, fmt).calls, text  # and the parser reads what it allows
    for text in bad:
        assert not oracle.accepts(grammar, text), text


def test_named_or_single_calls_grammar_allows_one_call_to_that_function(oracle: Oracle
                                                                        ) -> None:
    one = '<tool_call>{"name": "get_time", "arguments": {}}</tool_call>'
    named = calls_grammar([WEATHER, TIME], "hermes", parallel=True, only="get_time")
    assert oracle.accepts(named, one)
    assert not oracle.accepts(named, one + "\n" + one)
    assert not oracle.accepts(named, '<tool_call>{"name": "get_weather", "arguments": '
                                     '{"city": "a", "unit": "c"}}</tool_call>')
    single = calls_grammar([WEATHER, TIME], "hermes", parallel=False)
    assert not oracle.accepts(single, one + "\n" + one)
    many = calls_grammar([TIME], "hermes", parallel=True)
    assert oracle.accepts(many, "\n".join([one] * MAX_CALLS))
    assert not oracle.accepts(many, "\n".join([one] * (MAX_CALLS + 1)))


def test_calls_or_an_answer_for_auto_with_a_response_format(oracle: Oracle) -> None:
    grammar = calls_grammar([TIME], "hermes", parallel=True,
                            answer={"type": "object", "properties": {"a": {"type": "integer"}},
                                    "required": ["a"], "additionalProperties": False})
    assert oracle.accepts(grammar, '<tool_call>{"name": "get_time", "arguments": {}}'
                                   '</tool_call>')
    assert oracle.accepts(grammar, '{"a": 1}')
    assert not oracle.accepts(grammar, "Hello")


def test_unsupported_parameters_name_the_function() -> None:
    bad = Function("f", "", {"type": "object", "properties": {
        "x": {"type": "string", "pattern": "a"}}}, "")
    with pytest.raises(UnsupportedToolSchema) as info:
        calls_grammar([TIME, bad], "hermes", parallel=True)
    assert (info.value.index, info.value.keyword) == (1, "pattern")
    with pytest.raises(UnsupportedToolSchema):
        calls_grammar([Function("g", "", {"type": "string"}, "")], "hermes", parallel=True)
