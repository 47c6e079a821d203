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
    guard_actions: list[GuardAction] = field(default_factory=list)

    def elapsed(self) -> float:
        return time.perf_counter() - self.arrived

    def mark_first_token(self) -> None:
        if self.first_token_s is None:
            self.first_token_s = self.elapsed()
