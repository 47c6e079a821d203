"""``POST /v1/memory``: a memory passes the same input rail as a chat message before it is
stored, because a stored memory is later recalled into prompts.

- the rules tier (normalisation, injection rules, blocklists, PII and secrets): PII is
  redacted and the redacted text is what is stored (the answer says ``redacted``); a rule
  that blocks (a leaked secret, an injection) refuses the write with
  ``400 content_filter`` naming the guard, as chat does;
- the classifiers (prompt injection, content safety) on the redacted text: a block
  refuses the write the same way. Their embedding is the memory's vector (the same
  encoder, the same text), so the text is embedded once. A topic match is no block.

Under the key's guard policy. With the guards off the content is stored as sent, as
chat messages reach the model as sent. The ids are the caller's keyed hashes
(:mod:`appliance.store.pseudonyms`).
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.admission.keys import KeyRecord
from appliance.api.memory import Tier
from appliance.memory.memories import MemoryEntry, MemoryStore
from appliance.observability.trace import RequestTrace
from appliance.pipeline.input_stage import InputStage
from appliance.store.vectors import Vector


@dataclass(frozen=True)
class Written:
    entry: MemoryEntry
    redacted: bool  # the stored content is the sent one with PII replaced by labels


class MemoryWriter:
    def __init__(self, memory: MemoryStore, inputs: InputStage) -> None:
        self._memory = memory
        self._inputs = inputs

    async def add(self, key: KeyRecord, tier: Tier, content: str, *, user: str,
                  session_id: str, pinned: bool, trace: RequestTrace) -> Written:
        """Check ``content`` under the key's policy (raises ContentFiltered), then store
        what passed. ``user``/``session_id``: keyed hashes."""
        stored: str = content
        vector: Vector | None = None
        rails = self._inputs.rails_for(key)
        if rails is not None:
            rules = self._inputs.rules(rails, [content], 0, trace, param="content")
            check = await self._inputs.classify(rails, rules, trace, param="content")
            stored = rules.texts[0]
            vector = check.decision.embedding
        entry = await self._memory.add(key.id, tier, stored, user=user, session_id=session_id,
                                       pinned=pinned, vector=vector)
        return Written(entry, stored != content)
