"""The OpenAI API on the wire to an upstream: request bodies, streamed chunks, errors.

Pure functions, no I/O. Requests always stream (``stream_options.include_usage`` on), also
for a client that did not ask to: one code path, and a cancellation closes the stream.
Sampling fields beyond OpenAI's (``top_k``, ``min_p``, ``repeat_penalty``, ``ignore_eos``)
are sent only when set; llama-server, vLLM and the appliance read them.

Errors: the upstream's status is mapped into the appliance's error tree, and nothing of
its message, address or key reaches the client (a 400 keeps only its OpenAI ``code``
when that is a well-known one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from appliance.engine.types import GenerationRequest
from appliance.errors import (
    BadGateway,
    ContextLengthExceeded,
    InvalidRequest,
    Overloaded,
    RequestError,
)

CHAT_PATH, COMPLETIONS_PATH, MODELS_PATH = "/v1/chat/completions", "/v1/completions", "/v1/models"
_FINISH = {"stop": "stop", "length": "length", "eos": "stop"}


def path_of(request: GenerationRequest) -> str:
    assert request.text is not None
    return COMPLETIONS_PATH if request.text.text is not None else CHAT_PATH


def request_body(request: GenerationRequest) -> dict[str, Any]:
    prompt = request.text
    assert prompt is not None, "an upstream request carries its prompt as text"
    body: dict[str, Any] = {"model": request.model, "stream": True,
                            "stream_options": {"include_usage": True},
                            "max_tokens": request.max_tokens}
    if prompt.text is not None:
        body["prompt"] = prompt.text
    else:
        body["messages"] = [{"role": m.role, "content": m.content,
                             **({"name": m.name} if m.name else {})}
                            for m in prompt.messages]
    s = request.sampling
    body["temperature"] = s.temperature
    body["top_p"] = s.top_p
    optional: dict[str, Any] = {
        "seed": s.seed, "presence_penalty": s.presence_penalty or None,
        "frequency_penalty": s.frequency_penalty or None, "top_k": s.top_k or None,
        "min_p": s.min_p or None,
        "repeat_penalty": s.repeat_penalty if s.repeat_penalty != 1.0 else None,
        "logit_bias": {str(t): b for t, b in s.logit_bias} or None,
        "stop": list(request.stop) or None, "ignore_eos": request.ignore_eos or None}
    body.update({k: v for k, v in optional.items() if v is not None})
    return body


@dataclass(frozen=True)
class ChunkRead:
    """What one streamed chunk says."""

    text: str = ""
    finish_reason: str | None = None  # "stop" | "length"
    usage: Usage | None = None


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0


def read_chunk(data: Any, chat: bool) -> ChunkRead:
    """A parsed ``data:`` object; an error event or a malformed chunk is a 502."""
    if not isinstance(data, dict):
        raise BadGateway("the upstream engine sent a malformed stream")
    if "error" in data:
        raise BadGateway("the upstream engine failed while generating")
    usage = _usage(data.get("usage"))
    choices = data.get("choices") or []
    if not isinstance(choices, list) or not choices:
        return ChunkRead(usage=usage)
    choice = choices[0]
    if not isinstance(choice, dict):
        raise BadGateway("the upstream engine sent a malformed stream")
    if chat:
        delta = choice.get("delta") or {}
        text = delta.get("content") if isinstance(delta, dict) else None
    else:
        text = choice.get("text")
    reason = choice.get("finish_reason")
    return ChunkRead(text if isinstance(text, str) else "",
                     _FINISH.get(reason, "stop") if isinstance(reason, str) else None, usage)


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    prompt, completion = raw.get("prompt_tokens"), raw.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    details = raw.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return Usage(prompt, completion, cached if isinstance(cached, int) else 0)


def error_for(status: int, body: Any, retry_after: str | None) -> RequestError:
    """An upstream's error answer as the appliance's error (its own words left out)."""
    if status == 400:
        code = _code(body)
        if code == "context_length_exceeded" or code == "exceed_context_size_error":
            return ContextLengthExceeded("the prompt plus max_tokens exceed the context "
                                         "of the model's engine", param="messages")
        return InvalidRequest("the model's engine refused the request as invalid (for "
                              "instance a parameter it does not support)")
    if status in (429, 503):
        return Overloaded("the model's engine is busy; retry shortly",
                          retry_after=_seconds(retry_after))
    if status in (401, 403):
        return BadGateway("the model's engine refused the appliance's credentials "
                          "(see the server log)")
    if status == 404:
        return BadGateway("the model's engine does not serve this model (any more)")
    return BadGateway(f"the model's engine failed (HTTP {status})")


def _code(body: Any) -> str | None:
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        for field in ("code", "type"):
            value = error.get(field)
            if isinstance(value, str):
                return value
    return None


def _seconds(header: str | None) -> float:
    try:
        value = float(header) if header is not None else 1.0
    except ValueError:
        return 1.0
    return value if math.isfinite(value) and value > 0 else 1.0
