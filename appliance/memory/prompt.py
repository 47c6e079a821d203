"""Memory in the prompt: how recalled memory is placed into a chat request.

Related user/global memories (and the session's summaries) go into the first system
message as a short note; recent session turns the client did not send again go verbatim
before the request's own turns. The texts added are returned so that the service can
count the memory tokens with the model's tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.engine.chat import ChatMessage
from appliance.memory.memories import Recall


@dataclass(frozen=True)
class MemoryContext:
    """Who a chat request remembers for: its key, user, session and last user turn."""

    key_id: int
    user: str
    session_id: str
    last_user: str


MEMORY_HEADER = "Relevant memory (from earlier conversations and shared notes):"
SUMMARY_HEADER = "Earlier in this conversation (summarised):"


@dataclass(frozen=True)
class Injection:
    messages: tuple[ChatMessage, ...]
    added: tuple[str, ...]  # the texts added (to count the memory tokens)


def inject_memory(messages: tuple[ChatMessage, ...], recall: Recall) -> Injection:
    """``messages`` with the recalled memory: related memories appended to the (first)
    system message as bullets, then the session turns the request does not already carry,
    verbatim, before the request's own turns. Unchanged (the same object) if nothing."""
    present = {(m.role, m.content) for m in messages}
    turns = [ChatMessage(t.role, t.content) for t in recall.turns
             if (t.role, t.content) not in present]
    if not turns and not recall.related and not recall.summaries:
        return Injection(messages, ())
    added = [t.content for t in turns]
    notes = []
    if recall.summaries:
        notes.append(SUMMARY_HEADER + "\n" + "\n".join(s.content for s in recall.summaries))
    if recall.related:
        notes.append(MEMORY_HEADER + "\n" + "\n".join(f"- {r.entry.content}"
                                                      for r in recall.related))
    added.extend(notes)
    head = 0
    while head < len(messages) and messages[head].role == "system":
        head += 1
    system = list(messages[:head])
    if notes:
        note = "\n\n".join(notes)
        if system:
            first = system[0]
            system[0] = ChatMessage("system", f"{first.content}\n\n{note}", first.name)
        else:
            system = [ChatMessage("system", note)]
    return Injection((*system, *turns, *messages[head:]), tuple(added))
