"""``POST /v1/guard`` and ``appliance guard check``: texts through a rail, nothing generated.

Admitted like a generation (the key's buckets are charged the texts' tokens, and a slot of
the same bounded, fair queue is held while the guards run), within ``guard_max_tokens``
per call: the encoder's work grows with the tokens, so a call cannot occupy the machine
for long.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Protocol

from appliance.admission.gate import Gate
from appliance.admission.keys import KeyRecord
from appliance.errors import InvalidRequest
from appliance.guards.rails import TextReport
from appliance.guards.readiness import GuardsState
from appliance.observability.trace import RequestTrace
from appliance.pipeline.input_stage import not_a_verdict


class TokenCounter(Protocol):
    def full_token_counts(self, texts: Sequence[str]) -> list[int]: ...


class GuardCheck:
    def __init__(self, guards: GuardsState, gate: Gate, counter: TokenCounter, *,
                 max_tokens: int) -> None:
        self._guards = guards
        self._gate = gate
        self._counter = counter
        self._max_tokens = max_tokens

    async def check(self, texts: Sequence[str], role: str, key: KeyRecord,
                    trace: RequestTrace, policy: str | None = None) -> list[TextReport]:
        """Each text through the input (role user or system) or output (role assistant) rail of
        ``policy``, else the key's policy, else the server's."""
        if not self._guards.enabled:
            raise InvalidRequest("the guards are switched off on this server (guards = false)",
                                 code="guards_disabled")
        guards = self._guards.get()
        rails = guards.rails(policy or key.guard_policy)
        tokens = sum(await asyncio.to_thread(self._counter.full_token_counts, texts))
        if tokens > self._max_tokens:
            raise InvalidRequest(f"the input holds {tokens} tokens; one call may hold at "
                                 f"most {self._max_tokens} (guard_max_tokens): split it",
                                 param="input")
        queued_at = time.perf_counter()
        async with self._gate.admit(key, tokens, 0):
            trace.queue_wait_s = time.perf_counter() - queued_at
            reports = [await guards.check_text(text, role, rails) for text in texts]
        trace.prompt_tokens = tokens
        busy = not_a_verdict([v for r in reports for v in r.verdicts])
        if busy is not None:
            raise busy
        return reports
