"""What happened to one request, recorded as it passes through the stages.

The web layer creates one ``RequestTrace`` per HTTP request (in the middleware) and hands
it down; each stage (admission, guards, cache, memory, generation) fills in its part; at the
end the access log and the metrics read it. It belongs to the one task serving the request,
so it is a plain mutable dataclass with no locking. The core never sees aiohttp: a trace is
just data.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass(frozen=True)
class GuardAction:
    """A guard decision worth recording (anything other than a plain allow)."""

    guard: str
    direction: str  # "input" | "output"
    label: str
    action: str  # "block" | "redact" | "flag"
    ms: float


@dataclass
class RequestTrace:
    request_id: str
    route: str
    arrived: float = field(default_factory=time.perf_counter)
    key_name: str | None = None
    status: int | None = None
    error_type: str | None = None
    queue_wait_s: float | None = None
    guard_s: float = 0.0
    first_token_s: float | None = None  # since ``arrived``: the user-perceived TTFT
    finished_s: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    memory_tokens: int = 0
    cache: str | None = None  # "hit-exact" | "hit-semantic" | "miss" | "bypass"
    cache_similarity: float | None = None  # cosine of a semantic hit
    topic: str | None = None  # a topic rail answered instead of the model ("emergency")
    guard_actions: list[GuardAction] = field(default_factory=list)
    guard_checks: list[GuardAction] = field(default_factory=list)  # every verdict, allow too
    holdback_s: list[float] = field(default_factory=list)  # per output window released
    # Observability (metrics and logs read these when the request ends).
    prefill_s: float | None = None  # engine: scheduled -> first token
    rate_limit_kind: str | None = None  # a 429's limit: "requests" | "tokens" | "concurrency"
    token_gaps_s: list[float] = field(default_factory=list)  # one per token after the first
    engine: str | None = None  # the engine that generated (the last one, after failovers)
    model: str | None = None  # the model that answered
    auto_reason: str | None = None  # model "auto": why this model (routing.auto)
    failovers: int = 0  # engines that failed before answering and were replaced
    keep_content: bool = False  # content logging on: stages keep the response text
    response_parts: list[str] = field(default_factory=list)  # only when keep_content
    _last_token_at: float = 0.0
    _tokens_seen: int = 0

    def elapsed(self) -> float:
        return time.perf_counter() - self.arrived

    def mark_first_token(self) -> None:
        if self.first_token_s is None:
            self.first_token_s = self.elapsed()

    def mark_tokens(self, n_tokens: int) -> None:
        """Text released with ``n_tokens`` completion tokens generated so far: the first
        call sets TTFT, later ones record the gap since the previous release, split evenly
        over the tokens it carried (k tokens in one chunk count k gaps of 1/k)."""
        now = time.perf_counter()
        if self.first_token_s is None:
            self.first_token_s = now - self.arrived
        elif n_tokens > self._tokens_seen:
            k = n_tokens - self._tokens_seen
            gap = (now - self._last_token_at) / k
            if k == 1:
                self.token_gaps_s.append(gap)
            else:
                self.token_gaps_s.extend([gap] * k)
        self._last_token_at = now
        self._tokens_seen = max(self._tokens_seen, n_tokens)

    def released(self, text: str, n_tokens: int) -> None:
        """``text`` was sent to the client, ``n_tokens`` completion tokens generated so far
        (after the output rail, so TTFT and gaps are what the user saw)."""
        self.mark_tokens(n_tokens)
        if self.keep_content:
            self.response_parts.append(text)
