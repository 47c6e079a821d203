"""What the request pipeline hands between its stages and to the web layer.

- :class:`RequestContext`: who asked and how (the API key, the trace that records what
  happens, cache directives, the OpenAI ``user`` and the memory session, both as keyed
  hashes): one object instead of parameters threaded through every stage.
- :class:`Job`: one prepared generation (its route: the model and whether the embedded
  engine or an upstream serves it; the prompt as tokens for the embedded engine or as text
  for an upstream; limits, the guard rails and the rules-tier verdicts already taken, the
  cache query, the memory context).
- :class:`Chunk`, :class:`Usage`, :class:`Generation`: what comes back.

Plain frozen data, no behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from appliance.admission.gate import ANONYMOUS
from appliance.admission.keys import KeyRecord
from appliance.api.requests import GenerationOptions
from appliance.cache.response import CacheDirectives, CacheQuery
from appliance.engine.chat import ToolCall
from appliance.engine.types import GenerationRequest, TokenLogprob
from appliance.guards.rails import PolicyRails, RulesStage
from appliance.memory.prompt import MemoryContext
from appliance.observability.trace import RequestTrace
from appliance.routing.catalog import Route
from appliance.structured.toolcalls import CallFormat

Kind = Literal["chat", "text"]
# Why an answer ended, as the client is told (the engine's cancelled/error never get here).
FinishReason = Literal["stop", "length", "content_filter", "tool_calls"]


@dataclass(frozen=True)
class RequestContext:
    key: KeyRecord
    trace: RequestTrace
    directives: CacheDirectives = field(default_factory=CacheDirectives)
    session_id: str | None = None  # keyed hash of the client's (appliance.store.pseudonyms)
    user: str = ""  # keyed hash of the request's ``user`` ("": none)
    # The texts were built by the server from text its rails already passed (a session
    # transcript to summarise): the input classifiers are skipped (a transcript's "user:"
    # and "assistant:" lines read like a spoofed chat); the rules and the output rail run.
    inputs_checked: bool = False

    @classmethod
    def background(cls, what: str) -> RequestContext:
        """Work the server does for itself (session summaries): the unlimited internal key,
        a trace nobody reads, no cache (its prompts hold other people's words), and texts
        that already passed the input rail."""
        return cls(ANONYMOUS, RequestTrace(what, what),
                   CacheDirectives(no_cache=True, no_store=True), inputs_checked=True)


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    memory_tokens: int = 0  # of prompt_tokens, added by memory injection

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Job:
    id: str
    created: int
    kind: Kind
    request: GenerationRequest
    options: GenerationOptions
    route: Route
    echo_text: str = ""
    rails: PolicyRails | None = None  # the guard policy's rails (None: guards off)
    rules: RulesStage | None = None  # the input rail's rules tier, done in prepare
    cache: CacheQuery | None = None  # None: the response cache is not consulted
    memory: MemoryContext | None = None  # None: nothing is remembered
    memory_tokens: int = 0
    prompt_chars: int = 0  # completions: the prompt's length (where text_offset starts)
    calls: CallFormat | None = None  # None: the answer is not read for tool calls
    shape: str = ""  # the tools and response format, as the cache keys see them
    prompt_estimate: int = 0  # an upstream's prompt, estimated until its usage says

    @property
    def prompt_tokens(self) -> int:
        return len(self.request.prompt_tokens) or self.prompt_estimate

    @property
    def n(self) -> int:
        return self.options.n


@dataclass(frozen=True)
class Chunk:
    """One piece of a streamed generation; the last has ``finish_reason`` and ``usage``.
    With n choices, ``index`` says whose (each choice has its own last chunk, its usage
    that choice's)."""

    text: str
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    logprobs: tuple[TokenLogprob, ...] = ()  # of the tokens this text completes (if asked)
    index: int = 0
    calls: tuple[ToolCall, ...] = ()  # complete tool calls, checked by the output rail


@dataclass(frozen=True)
class Generation:
    text: str
    finish_reason: FinishReason
    usage: Usage
    logprobs: tuple[TokenLogprob, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()
