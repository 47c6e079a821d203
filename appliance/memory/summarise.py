"""Hierarchical compression of long sessions, in the background, with the local model.

When the verbatim turns of a session hold more than ``threshold_tokens`` (500 by default),
all but the ``keep_recent`` newest turns are summarised into a **digest** (a few
sentences) that replaces them; when a session has more than ``max_digests`` digests, they
(and any earlier key-fact list) are condensed into one **facts** entry of bullet points.
So a conversation is remembered as: key facts (oldest), digests, recent turns verbatim.
Each replacement is one SQLite transaction (:meth:`MemoryStore.replace_with_summary`).

``summarise(instruction, text)`` is the model call (``GenerationService.summarise`` in the
server: greedy, admitted through the same queue as requests); tests pass their own.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from appliance.memory.memories import MemoryEntry, MemoryStore, SessionRef

log = logging.getLogger("appliance.memory")

Summarise = Callable[[str, str], Awaitable[str]]

DIGEST_INSTRUCTION = ("Summarise this conversation in two or three sentences. Keep names, "
                      "numbers, decisions and anything the user asked to remember.")
FACTS_INSTRUCTION = ("List the key facts from these notes as short bullet points, one per "
                     "line, each starting with '- '. Keep names, numbers and decisions.")
_MAX_CHARS = 4000  # of transcript per model call (the newest part is kept)


@dataclass(frozen=True)
class SummaryConfig:
    threshold_tokens: int = 500
    keep_recent: int = 4
    max_digests: int = 3


@dataclass(frozen=True)
class SummaryReport:
    sessions: int
    digests: int
    facts: int


def transcript(entries: Sequence[MemoryEntry]) -> str:
    text = "\n".join(f"{e.role}: {e.content}" if e.kind == "turn" else e.content
                     for e in entries)
    return text[-_MAX_CHARS:]


class SessionSummariser:
    def __init__(self, memory: MemoryStore, summarise: Summarise,
                 config: SummaryConfig = SummaryConfig()) -> None:
        self.memory = memory
        self.summarise = summarise
        self.config = config

    async def run_once(self) -> SummaryReport:
        """Compress every session over the threshold once; returns what was written."""
        cfg = self.config
        if cfg.threshold_tokens <= 0:
            return SummaryReport(0, 0, 0)
        digests = facts = 0
        sessions = await self.memory.long_sessions(cfg.threshold_tokens)
        for ref in sessions:
            try:
                wrote_digest, wrote_facts = await self._compress(ref)
            except Exception:
                log.exception("summarising session %r failed; it stays verbatim",
                              ref.session_id)
                continue
            digests += wrote_digest
            facts += wrote_facts
        return SummaryReport(len(sessions), digests, facts)

    async def _compress(self, ref: SessionRef) -> tuple[int, int]:
        cfg = self.config
        rows = await self.memory.session_rows(ref)
        turns = [e for e in rows if e.kind == "turn"]
        older = turns[:-cfg.keep_recent] if cfg.keep_recent else turns
        wrote_digest = wrote_facts = 0
        if older:
            text = (await self.summarise(DIGEST_INSTRUCTION, transcript(older))).strip()
            if text:
                await self.memory.replace_with_summary(ref, [e.id for e in older], "digest",
                                                       text)
                wrote_digest = 1
        rows = await self.memory.session_rows(ref)
        digests = [e for e in rows if e.kind == "digest"]
        if len(digests) > cfg.max_digests:
            earlier = [e for e in rows if e.kind == "facts"]
            text = (await self.summarise(FACTS_INSTRUCTION,
                                         transcript([*earlier, *digests]))).strip()
            if text:
                await self.memory.replace_with_summary(
                    ref, [e.id for e in (*earlier, *digests)], "facts", text)
                wrote_facts = 1
        return wrote_digest, wrote_facts
