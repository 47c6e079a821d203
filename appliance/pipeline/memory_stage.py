"""Memory as the pipeline uses it: recall and inject into a chat request, remember the
finished exchange.

A chat request that names a ``user`` and/or a session gets its memory injected into the
prompt (:func:`appliance.memory.prompt.inject_memory`); ``usage.memory_tokens`` says how many
prompt tokens that added (counted by the embedded model's tokenizer for its own prompts,
estimated for an upstream's). An answer that finished normally is kept as session turns.
Memory only ever sees the redacted text: the rules tier ran before this stage.
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.admission.keys import KeyRecord
from appliance.engine.chat import ChatMessage
from appliance.engine.estimate import estimate_text
from appliance.engine.tokenizer import Tokenizer
from appliance.memory.memories import MemoryStore
from appliance.memory.prompt import MemoryContext, inject_memory


@dataclass(frozen=True)
class Injected:
    messages: tuple[ChatMessage, ...]
    context: MemoryContext | None
    tokens: int  # prompt tokens the memory added


class MemoryStage:
    def __init__(self, memory: MemoryStore, tokenizer: Tokenizer | None) -> None:
        self._memory = memory
        self._tokenizer = tokenizer

    async def inject(self, messages: tuple[ChatMessage, ...], key: KeyRecord,
                     user: str | None, session_id: str | None, *,
                     exact: bool = True) -> Injected:
        """``exact``: count the added tokens with the embedded model's tokenizer (its own
        prompts), else estimate them (an upstream's)."""
        user = user or ""
        if not (user or session_id):
            return Injected(messages, None, 0)
        last = messages[-1]
        context = MemoryContext(key.id, user, session_id or "",
                                last.content if last.role == "user" else "")
        recall = await self._memory.recall(context.key_id, context.user, context.session_id,
                                           context.last_user)
        injection = inject_memory(messages, recall)
        tokenizer = self._tokenizer if exact else None
        tokens = sum(len(tokenizer.tokenize_text(text, add_special=False))
                     if tokenizer is not None else estimate_text(text)
                     for text in injection.added)
        return Injected(injection.messages, context, tokens)

    async def remember(self, context: MemoryContext | None, answer: str) -> None:
        """Keep the exchange as session turns (when the request named a session)."""
        if context is None or not context.session_id:
            return
        await self._memory.add_turns(context.key_id, context.user, context.session_id,
                                     [("user", context.last_user), ("assistant", answer)])
