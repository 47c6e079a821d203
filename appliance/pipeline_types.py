"""What the request pipeline hands between its stages and to the web layer: the prepared
request, the chunks of an answer, its usage. Plain frozen data, no behaviour."""

from __future__ import annotations

from dataclasses import dataclass

from appliance.api.requests import GenerationOptions
from appliance.cache import CacheQuery
from appliance.engine.types import GenerationRequest
from appliance.guards.rails import PolicyRails, RulesStage
from appliance.memory_prompt import MemoryContext


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
class Prepared:
    id: str
    created: int
    kind: str  # "chat" | "text"
    request: GenerationRequest
    options: GenerationOptions
    echo_text: str = ""
    rails: PolicyRails | None = None  # the guard policy's rails (None: guards off)
    stage: RulesStage | None = None  # the input rail's rules tier, done in prepare
    cache: CacheQuery | None = None  # None: the response cache is not consulted
    memory: MemoryContext | None = None  # None: nothing is remembered
    memory_tokens: int = 0


@dataclass(frozen=True)
class Chunk:
    """One piece of a streamed generation; the last has ``finish_reason`` and ``usage``."""

    text: str
    finish_reason: str | None = None
    usage: Usage | None = None


@dataclass(frozen=True)
class Generation:
    text: str
    finish_reason: str
    usage: Usage
