"""OpenAI response and stream-chunk bodies (plain dicts; the web layer serialises them)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from appliance.engine.chat import ToolCall
from appliance.engine.models import ModelSpec
from appliance.pipeline.job import Chunk, Generation, Job, Usage
from appliance.routing.catalog import Catalog

# A call's arguments are streamed in pieces of whole JSON tokens (strings, numbers, words,
# punctuation with its spaces), as a model would write them.
_ARG_PIECES = re.compile(r'\s*(?:"(?:[^"\\]|\\.)*"?|[^\s"{}\[\],:]+|.)\s*', re.S)


def usage_body(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
        "memory_tokens": usage.memory_tokens,
    }


def tool_calls_body(calls: Sequence[ToolCall]) -> list[dict[str, Any]]:
    return [{"id": c.id, "type": "function",
             "function": {"name": c.name, "arguments": c.arguments}} for c in calls]


def _head(p: Job, model: str, fingerprint: str | None, obj: str) -> dict[str, Any]:
    return {"id": p.id, "object": obj, "created": p.created, "model": model,
            "system_fingerprint": fingerprint}


def completion_body(p: Job, g: Generation, model: str, fingerprint: str | None
                    ) -> dict[str, Any]:
    if p.kind == "chat":
        body = _head(p, model, fingerprint, "chat.completion")
        message: dict[str, Any] = {"role": "assistant", "content": g.text}
        if g.tool_calls:
            message["content"] = g.text or None
            message["tool_calls"] = tool_calls_body(g.tool_calls)
        body["choices"] = [{
            "index": 0,
            "message": message,
            "logprobs": None,
            "finish_reason": g.finish_reason,
        }]
    else:
        body = _head(p, model, fingerprint, "text_completion")
        body["choices"] = [{"index": 0, "text": g.text, "logprobs": None,
                            "finish_reason": g.finish_reason}]
    body["usage"] = usage_body(g.usage)
    return body


class ChunkFormatter:
    """Turns service ``Chunk``s into OpenAI stream chunk bodies for one request."""

    def __init__(self, p: Job, model: str, fingerprint: str | None) -> None:
        self.p = p
        self.chat = p.kind == "chat"
        self._head = _head(p, model, fingerprint,
                           "chat.completion.chunk" if self.chat else "text_completion")
        self._calls = 0  # tool calls sent so far (the index of the next)

    def _choice(self, text: str | None, finish: str | None, *, role: bool = False
                ) -> dict[str, Any]:
        if self.chat:
            delta: dict[str, Any] = {}
            if role:
                delta["role"] = "assistant"
            if text is not None:
                delta["content"] = text
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}

    def first(self) -> dict[str, Any] | None:
        """The opening chunk (chat: the assistant role; text: the echoed prompt)."""
        if self.chat:
            return {**self._head, "choices": [self._choice("", None, role=True)]}
        if self.p.echo_text:
            return {**self._head, "choices": [self._choice(self.p.echo_text, None)]}
        return None

    def chunk(self, c: Chunk) -> list[dict[str, Any]]:
        out = []
        if c.text:
            out.append({**self._head, "choices": [self._choice(c.text, None)]})
        for call in c.calls:
            out.extend({**self._head, "choices": [
                {"index": 0, "delta": {"tool_calls": [d]}, "logprobs": None,
                 "finish_reason": None}]} for d in self._call_deltas(call))
        if c.finish_reason is not None:
            out.append({**self._head, "choices": [
                self._choice(None if self.chat else "", c.finish_reason)]})
            if self.p.options.include_usage and c.usage is not None:
                out.append({**self._head, "choices": [], "usage": usage_body(c.usage)})
        return out


    def _call_deltas(self, call: ToolCall) -> list[dict[str, Any]]:
        """OpenAI's tool-call deltas: the id and name first, then the arguments in pieces."""
        index = self._calls
        self._calls += 1
        deltas: list[dict[str, Any]] = [{"index": index, "id": call.id, "type": "function",
                                         "function": {"name": call.name, "arguments": ""}}]
        deltas.extend({"index": index, "function": {"arguments": piece}}
                      for piece in _ARG_PIECES.findall(call.arguments))
        return deltas


def models_body(catalog: Catalog, manifest: tuple[ModelSpec, ...], available: set[str],
                created: int) -> dict[str, Any]:
    """Every model an engine serves, with its engines (``default`` and ``auto`` among
    them), then the manifest's models this server does not load."""
    served = catalog.served
    specs = {s.id: s for s in manifest}
    if served is not None:
        specs[served.id] = served.model.spec

    def row(model_id: str, engines: tuple[str, ...], alias_of: str | None) -> dict[str, Any]:
        spec = specs.get(alias_of or model_id)
        out: dict[str, Any] = {"id": model_id, "object": "model", "created": created,
                               "owned_by": "appliance", "engines": list(engines),
                               "engine": engines[0] if engines else None,
                               "loaded": bool(engines)}
        if alias_of is not None:
            out["alias_of"] = alias_of
        if spec is not None and (served is None or spec.id == served.id or not engines):
            out.update(available=spec.id in available, file=spec.file, sha256=spec.sha256,
                       quantization=spec.quantization, licence=spec.licence,
                       chat_template=spec.chat_template != "none")
        return out

    data = [row(m.id, m.engines, m.alias_of) for m in catalog.listing()]
    listed = {m["id"] for m in data}
    data += [row(spec.id, (), None) for spec in manifest if spec.id not in listed]
    return {"object": "list", "data": data}
