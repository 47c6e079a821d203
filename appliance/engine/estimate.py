"""Prompt sizes without the model's tokenizer: for an upstream model (whose tokenizer is on
another machine) before its ``usage`` says the real count.

About four characters a token, as in English text for the BPE vocabularies of current
models, plus a few tokens of chat-template markup per message. An estimate is used for
admission (the key's token bucket is charged the real count when the answer ends) and for
the ``auto`` rule; it is never reported as usage.
"""

from __future__ import annotations

from collections.abc import Sequence

from appliance.engine.chat import ChatMessage

CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD = 4  # role markers and separators of a chat template


def estimate_text(text: str) -> int:
    return -(-len(text) // CHARS_PER_TOKEN) if text else 0


def estimate_chat(messages: Sequence[ChatMessage]) -> int:
    return sum(estimate_text(m.content) + MESSAGE_OVERHEAD for m in messages)
