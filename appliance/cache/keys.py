"""The response cache's keys: pure functions of a request.

- the **fingerprint** hashes what makes an old answer wrong for everybody: the model
  file's sha256, the chat template source and the guard policy version. Entries carry it;
  when it changes (:meth:`ResponseCache.adopt`) every entry with another one is deleted.
- the **exact key** hashes the fingerprint with the whole request as the model sees it:
  the prompt tokens after the chat template (so the system prompt and every turn; an
  upstream model's messages or text, as it applies its own template), the sampling
  parameters, ``max_tokens``, the stop strings and the answer's *shape* (the tools and tool
  choice, the response format's schema: what the grammar and the reading of tool calls
  depend on, which the prompt's tokens alone may not show).
- the **context** hashes the same except the last user turn: a semantic hit needs the same
  context (same model, template, policy, system prompt, earlier turns and sampling) and an
  embedding of the last user turn within ``threshold`` cosine of the stored one.

Scope: ``key:<api key id>/user:<OpenAI user>``, or ``global`` for an answer an admin shares;
the user is the keyed hash the request's ``user`` is stored as (appliance.store.pseudonyms).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from appliance.engine.chat import ChatMessage
from appliance.engine.types import SamplingParams

GLOBAL_SCOPE = "global"


def _h(*parts: object) -> str:
    h = hashlib.sha256()
    for part in parts:
        data = repr(part).encode("utf-8")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def fingerprint(model_sha256: str, template: str, policy_version: str) -> str:
    return _h("fingerprint", model_sha256, template, policy_version)


def scope_for(key_id: int, user: str | None, *, shared: bool = False) -> str:
    return GLOBAL_SCOPE if shared else f"key:{key_id}/user:{user or ''}"


def request_keys(fp: str, kind: str, prompt: Sequence[object], sampling: SamplingParams,
                 max_tokens: int, stop: Sequence[str], messages: Sequence[ChatMessage] = (),
                 shape: str = "") -> tuple[str, str, str | None]:
    """``(exact_key, context, last_user_text)`` of one request (see the module doc)."""
    seed = sampling.seed if sampling.temperature > 0 else None  # greedy ignores the seed
    params = (kind, sampling.temperature, sampling.top_p, sampling.top_k, sampling.min_p,
              seed, sampling.presence_penalty, sampling.frequency_penalty,
              sampling.repeat_penalty, sampling.penalty_last_n, sampling.logit_bias,
              max_tokens, tuple(stop)) + ((shape,) if shape else ())
    exact = _h("exact", fp, params, tuple(prompt))
    last = messages[-1] if messages else None
    if last is None or last.role != "user" or not last.content.strip():
        return exact, _h("context", fp, params, "no-semantic", exact), None
    earlier = tuple((m.role, m.name, m.content) + ((m.tool_calls, m.tool_call_id)
                                                   if m.tool_calls or m.tool_call_id else ())
                    for m in messages[:-1])
    return exact, _h("context", fp, params, earlier, last.name), last.content
