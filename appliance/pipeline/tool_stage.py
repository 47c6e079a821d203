"""The shape of a chat answer, planned before the prompt is built: tools and formats.

:func:`plan_chat` decides, for one request and the model's chat template:

- how tools reach the model: through the template when it renders ``tools`` itself, else
  in the generic format (:mod:`~appliance.structured.tool_prompt`); with ``tool_choice``
  ``none`` they are not shown at all (earlier calls and results still are);
- the grammar every sampled token must follow: the response format's schema; the calls,
  when ``tool_choice`` forces them (``required`` or a named function); either of the two
  for ``auto`` with a response format; none for plain ``auto`` (the answer is parsed);
- how the answer is read for calls (:class:`~appliance.structured.toolcalls.CallFormat`);
- what the cache keys must add (the tools and the format, as text).

:class:`Grammars` converts schemas once per distinct schema; a keyword the converter
does not enforce is a 400 naming it.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from appliance.api.requests import ChatRequest
from appliance.engine.chat import ChatMessage, ChatTemplate, NoChatTemplate
from appliance.errors import InvalidRequest
from appliance.structured.gbnf import OBJECT, GrammarBuilder
from appliance.structured.schema import UnsupportedSchema, schema_grammar
from appliance.structured.spec import ResponseFormat, Tools
from appliance.structured.tool_grammar import UnsupportedToolSchema, calls_grammar
from appliance.structured.tool_prompt import generic_messages
from appliance.structured.toolcalls import CallFormat, ToolSyntax, detect_syntax

_MEMO_SIZE = 256
_BIG_SCHEMA_CHARS = 16_384  # convert larger schemas off the event loop


@dataclass(frozen=True)
class ChatPlan:
    messages: tuple[ChatMessage, ...]
    tools: tuple[dict[str, Any], ...] | None  # for a template that renders them
    grammar: str | None
    calls: CallFormat | None  # None: the answer is not read for calls
    key: str  # the tools and the format, for the cache keys ("" when neither)


def _refusal(exc: UnsupportedSchema, param: str) -> InvalidRequest:
    where = f" at {exc.path}" if exc.path else ""
    return InvalidRequest(f"{param}: the keyword '{exc.keyword}'{where} is not supported: "
                          f"{exc.why}", param=param, code="unsupported_schema")


def _answer_schema(fmt: ResponseFormat) -> Mapping[str, Any]:
    return json.loads(fmt.schema_json) if fmt.kind == "json_schema" else {"type": "object"}


class Grammars:
    """Grammars by the text of what they enforce, converted once (least recently used
    dropped past ``size``)."""

    def __init__(self, size: int = _MEMO_SIZE) -> None:
        self._size = size
        self._memo: OrderedDict[str, str] = OrderedDict()

    async def _get(self, key: str, make: Callable[[], str]) -> str:
        grammar = self._memo.get(key)
        if grammar is None:
            grammar = (await asyncio.to_thread(make) if len(key) > _BIG_SCHEMA_CHARS
                       else make())
            self._memo[key] = grammar
            while len(self._memo) > self._size:
                self._memo.popitem(last=False)
        self._memo.move_to_end(key)
        return grammar

    async def answer(self, fmt: ResponseFormat) -> str:
        if fmt.kind == "json_object":
            return await self._get("json_object", _json_object)
        try:
            return await self._get("schema:" + fmt.schema_json,
                                   lambda: schema_grammar(json.loads(fmt.schema_json)))
        except UnsupportedSchema as exc:
            raise _refusal(exc, "response_format.json_schema.schema") from None

    async def calls(self, tools: Tools, syntax: ToolSyntax, fmt: ResponseFormat | None
                    ) -> str:
        forced = tools.choice in ("required", "function")
        answer = None if forced or fmt is None else _answer_schema(fmt)
        shape = [fmt.kind, fmt.schema_json] if answer is not None and fmt else None
        key = json.dumps([tools.key, syntax, shape])
        try:
            return await self._get(key, lambda: calls_grammar(
                tools.functions, syntax, parallel=tools.parallel, only=tools.forced,
                answer=answer))
        except UnsupportedToolSchema as exc:
            raise _refusal(exc, f"tools[{exc.index}].function.parameters") from None
        except UnsupportedSchema as exc:
            raise _refusal(exc, "response_format.json_schema.schema") from None


def _json_object() -> str:
    b = GrammarBuilder()
    return b.render(b.use(OBJECT))


async def plan_chat(req: ChatRequest, messages: tuple[ChatMessage, ...],
                    template: ChatTemplate | NoChatTemplate, grammars: Grammars) -> ChatPlan:
    """See the module doc; ``messages`` are the request's after the rules and memory."""
    tools, fmt = req.tools, req.response_format
    native = template.supports_tools
    history = any(m.tool_calls or m.role == "tool" for m in messages)
    key = json.dumps([tools.key if tools else None,
                      [fmt.kind, fmt.schema_json] if fmt else None]) if tools or fmt else ""
    if tools is None or tools.choice == "none":
        shown = messages if native or not history else generic_messages(messages, None)
        grammar = await grammars.answer(fmt) if fmt is not None else None
        return ChatPlan(shown, None, grammar, None, key)
    syntax = detect_syntax(template.source) if native else "hermes"
    forced = tools.choice in ("required", "function")
    grammar = await grammars.calls(tools, syntax, fmt) if forced or fmt is not None else None
    calls = CallFormat(syntax, tools.names, tools.parallel and tools.choice != "function")
    if native:
        return ChatPlan(messages, tuple(f.definition() for f in tools.functions), grammar,
                        calls, key)
    return ChatPlan(generic_messages(messages, tools), None, grammar, calls, key)
