"""Plain values passed between the request pipeline and the engine thread."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from appliance.engine.chat import ChatMessage

FinishReason = Literal["stop", "length", "cancelled", "error"]


GREEDY_BELOW = 1e-6  # a temperature under this samples the most likely token


@dataclass(frozen=True)
class SamplingParams:
    """Per-request sampling, applied by llama.cpp's own samplers in the engine thread."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    min_p: float = 0.0
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repeat_penalty: float = 1.0
    penalty_last_n: int = 64
    logit_bias: tuple[tuple[int, float], ...] = ()

    @property
    def penalised(self) -> bool:
        """Whether any repetition penalty applies."""
        return (self.repeat_penalty != 1.0 or self.frequency_penalty != 0.0
                or self.presence_penalty != 0.0)

    @property
    def greedy(self) -> bool:
        # Dividing logits by a temperature this small overflows float32 (the draw's
        # softmax turns NaN), and what it would draw is, all but surely, the top token.
        return self.temperature < GREEDY_BELOW


@dataclass(frozen=True)
class TextPrompt:
    """A prompt as text, for an engine that applies its own chat template and tokenizer
    (an upstream server): the chat's messages, or a completion's prompt."""

    messages: tuple[ChatMessage, ...] = ()
    text: str | None = None  # a completion's prompt; None for a chat


@dataclass(frozen=True)
class GenerationRequest:
    """What an engine needs to run one sequence: the prompt, limits, stops.

    The embedded engine reads ``prompt_tokens`` (rendered and tokenised with its own model);
    an upstream engine reads ``text`` and ``model`` (its id for the model) and leaves the
    template and the tokens to the server."""

    prompt_tokens: tuple[int, ...]
    max_tokens: int
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    # Log-probabilities of each sampled token and of this many alternatives (0..20);
    # None: not asked, and nothing is computed.
    logprobs: int | None = None
    grammar: str | None = None  # GBNF (start rule ``root``) every sampled token must follow
    # The consumer checks the text on side work as it comes (the output rail's network): the
    # embedded engine lets those checks run before its next step (see engine/cpu_turns.py).
    checked: bool = False
    text: TextPrompt | None = None
    model: str = ""


@dataclass(frozen=True)
class TopLogprob:
    token: int
    piece: bytes
    logprob: float


@dataclass(frozen=True)
class TokenLogprob:
    """A sampled token's log-probability and the most likely alternatives (see
    ``engine.logprobs`` for which distribution)."""

    token: int
    piece: bytes
    logprob: float
    top: tuple[TopLogprob, ...] = ()


@dataclass(frozen=True)
class TextDelta:
    """New text released to the client (already free of partial UTF-8 and stop prefixes)."""

    text: str
    n_tokens: int  # completion tokens so far
    logprobs: tuple[TokenLogprob, ...] = ()  # of the tokens this text completes


@dataclass(frozen=True)
class Finished:
    reason: FinishReason
    text: str  # the last piece of text released together with the finish (may be "")
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int  # prompt tokens whose KV was reused, not re-decoded
    prefill_seconds: float  # from getting a slot to the first token sampled
    error: str | None = None
    logprobs: tuple[TokenLogprob, ...] = ()  # those not yet sent with a TextDelta


Event = TextDelta | Finished
