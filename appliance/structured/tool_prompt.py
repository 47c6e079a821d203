"""The generic tool format, for chat templates that know nothing of tools (SmolLM2's).

The functions are described in the system prompt (after the client's own system text):

    # Tools

    You may call functions to help answer. The functions, as JSON schemas:
    <tools>
    {"type": "function", "function": {"name": ..., "description": ..., "parameters": ...}}
    </tools>

    To call a function, answer with one block per call and nothing else:
    <tool_call>{"name": "<function name>", "arguments": <the arguments as a JSON
    object>}</tool_call>
    Each result comes back in a <tool_response> block. When no function helps, answer in
    plain text.

(the call template is one line; one more sentence when the request forces a call, or
allows only one). The conversation's earlier calls are written into the assistant turns in
that syntax, and each tool result becomes a user turn holding
``<tool_response>{"name": ..., "content": ...}</tool_response>`` (consecutive results in one
turn), so a template that only knows system, user and assistant turns renders them all.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

from appliance.engine.chat import ChatMessage
from appliance.structured.spec import Tools
from appliance.structured.toolcalls import hermes_markup

_HEADER = ("# Tools\n\nYou may call functions to help answer. The functions, as JSON "
           "schemas:\n<tools>\n")
_HOW = ("</tools>\n\nTo call a function, answer with one block per call and nothing else:\n"
        '<tool_call>{"name": "<function name>", "arguments": <the arguments as a JSON '
        "object>}</tool_call>\nEach result comes back in a <tool_response> block. When no "
        "function helps, answer in plain text.")


def tools_prompt(tools: Tools) -> str:
    """The system-prompt section describing ``tools`` and how to call them."""
    lines = [json.dumps(f.definition(), ensure_ascii=False) for f in tools.functions]
    text = _HEADER + "\n".join(lines) + "\n" + _HOW
    if tools.choice == "required":
        text += " You must call at least one function now."
    elif tools.choice == "function":
        text += f" You must call the function {tools.forced} now."
    if not tools.parallel:
        text += " Call at most one function."
    return text


def _result(m: ChatMessage, names: dict[str, str]) -> str:
    name = names.get(m.tool_call_id or "", m.name or "")
    body = json.dumps({"name": name, "content": m.content}, ensure_ascii=False)
    return f"<tool_response>\n{body}\n</tool_response>"


def generic_messages(messages: Sequence[ChatMessage], tools: Tools | None
                     ) -> tuple[ChatMessage, ...]:
    """``messages`` rewritten in the generic format (``tools`` None: no tool section, as
    with ``tool_choice`` ``none``; earlier calls and results are still written out)."""
    names = {c.id: c.name for m in messages for c in m.tool_calls}
    out: list[ChatMessage] = []
    for m in messages:
        if m.role == "tool":
            text = _result(m, names)
            if out and out[-1].role == "user" and out[-1].content.startswith("<tool_resp"):
                out[-1] = ChatMessage("user", f"{out[-1].content}\n{text}")
            else:
                out.append(ChatMessage("user", text))
        elif m.tool_calls:
            text = (m.content + "\n" if m.content else "") + hermes_markup(m.tool_calls)
            out.append(ChatMessage("assistant", text, m.name))
        else:
            out.append(m)
    if tools is None or not tools.functions:
        return tuple(out)
    section = tools_prompt(tools)
    if out and out[0].role == "system":
        out[0] = dataclasses.replace(out[0], content=f"{out[0].content}\n\n{section}")
    else:
        out.insert(0, ChatMessage("system", section))
    return tuple(out)
