"""The grammar of forced tool calls (``tool_choice`` ``required`` or a named function).

The answer is nothing but calls, in the syntax the model's template teaches (see
:mod:`~appliance.structured.toolcalls`), each naming a declared function and carrying
arguments that match that function's parameters schema; several calls when parallel calls
are allowed (at most :data:`MAX_CALLS`), else exactly one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from appliance.structured.gbnf import WS, GrammarBuilder, alternatives, literal
from appliance.structured.schema import SchemaConverter, UnsupportedSchema, json_literal
from appliance.structured.spec import Function
from appliance.structured.toolcalls import HERMES_CLOSE, HERMES_OPEN, MISTRAL_MARK, ToolSyntax

MAX_CALLS = 8


class UnsupportedToolSchema(UnsupportedSchema):
    """An :class:`UnsupportedSchema` in the parameters of ``functions[index]``."""

    def __init__(self, index: int, inner: UnsupportedSchema) -> None:
        super().__init__(inner.keyword, inner.path, inner.why)
        self.index = index


def _arguments(conv: SchemaConverter, b: GrammarBuilder, fn: Function, i: int) -> str:
    if fn.parameters is None:
        return f'"{{" {b.use(WS)} "}}"'
    if fn.parameters.get("type", "object") != "object":
        raise UnsupportedToolSchema(i, UnsupportedSchema(
            "type", "", "function parameters must be an object schema"))
    try:
        return conv.add(fn.parameters, f"fn-{fn.name}")
    except UnsupportedSchema as exc:
        raise UnsupportedToolSchema(i, exc) from None


def calls_grammar(functions: Sequence[Function], syntax: ToolSyntax, *, parallel: bool,
                  only: str | None = None, answer: Mapping[str, Any] | None = None) -> str:
    """GBNF of one call (or up to :data:`MAX_CALLS` with ``parallel``) to ``functions``
    (only ``only`` when a function is named); or, given an ``answer`` schema, either that
    or a value of the schema (``tool_choice`` auto with a response format)."""
    b = GrammarBuilder()
    conv = SchemaConverter(b)
    ws = b.use(WS)
    key = '"\\"parameters\\""' if syntax == "llama3" else '"\\"arguments\\""'
    bodies = []
    for i, fn in enumerate(functions):
        if only is not None and fn.name != only:
            continue
        args = _arguments(conv, b, fn, i)
        bodies.append(f'{json_literal(fn.name)} {ws} "," {ws} {key} {ws} ":" {ws} {args}')
    body = b.define(b.name("call-body"), alternatives(bodies))
    obj = b.define(b.name("call"), f'"{{" {ws} "\\"name\\"" {ws} ":" {ws} {body} {ws} "}}"')
    many = MAX_CALLS - 1 if parallel and only is None else 0

    def more(sep: str, item: str) -> str:
        return f" ({sep} {item}){{0,{many}}}" if many else ""

    if syntax == "hermes":
        one = b.define(b.name("block"),
                       f'{literal(HERMES_OPEN)} "\\n"? {obj} "\\n"? {literal(HERMES_CLOSE)}')
        root = one + more('"\\n"', one)
    elif syntax == "llama3":
        root = obj + more('";" " "?', obj)
    else:
        root = f'{literal(MISTRAL_MARK)} "[" {obj}{more(literal(",") + " " + ws, obj)} "]"'
    if answer is not None:
        root = f"({root}) | {conv.add(answer, 'answer')}"
    return b.render(root)
