"""The constrained sampler never hands llama.cpp's grammar a token it masked: accepting one
throws inside llama.cpp, through its C API, and aborts the whole process. Real model, real
context, real sampler chain and grammar."""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np
import pytest

from appliance.engine.grammar import ConstrainedSampler, GrammarCache, _hot
from appliance.engine.native import Batch, ContextConfig, LlamaContext, LlamaModel, SamplerChain
from appliance.engine.types import SamplingParams

GRAMMAR = 'root ::= "{" [a-z]+ "}"'


@pytest.fixture(scope="module")
def ctx(llama: LlamaModel) -> Iterator[LlamaContext]:
    context = LlamaContext(llama, ContextConfig(n_ctx=256, n_seq_max=1, n_batch=64,
                                                n_threads=2))
    yield context
    context.close()


@pytest.fixture
def grammars(llama: LlamaModel) -> Iterator[GrammarCache]:
    cache = GrammarCache(llama)
    yield cache
    cache.close()


def _decode(ctx: LlamaContext, text: str) -> int:
    """Decode ``text`` as sequence 0; the batch row whose logits come next."""
    tokens = ctx.model.tokenize(text, add_special=True, parse_special=False)
    ctx.seq_rm(0)
    batch = Batch(64)
    for i, token in enumerate(tokens):
        batch.add(token, i, 0, i == len(tokens) - 1)
    assert ctx.decode(batch) == 0
    return len(tokens) - 1


def _draw(sampler: ConstrainedSampler, ctx: LlamaContext, row: int, n: int) -> str:
    """``n`` tokens from one logits row (the grammar advances with each); closes it."""
    try:
        return b"".join(ctx.model.piece(sampler.sample(ctx, row)) for _ in range(n)).decode()
    finally:
        sampler.close()


def test_a_draw_from_nan_logits_still_keeps_to_the_grammar(
        llama: LlamaModel, ctx: LlamaContext, grammars: GrammarCache,
        caplog: pytest.LogCaptureFixture) -> None:
    row = _decode(ctx, "The weather in Paris today is")
    logits = ctx.logits(row)
    # A repeat penalty of 0 (what 5e-324 is in float32; the parser now refuses it) turns
    # each repeated token's logit into inf (positive), 0 or NaN (-inf times 0), and the
    # draw's softmax into NaN. Every likely token is made a repeated one.
    chain = SamplerChain(llama, SamplingParams(repeat_penalty=0.0, penalty_last_n=256),
                         seed=1)
    for token in np.argsort(-logits)[:256]:
        _hot.accept(chain.ptr, int(token))
    text = _draw(grammars.constrain(chain, GRAMMAR), ctx, row, 6)
    assert re.fullmatch(r"\{[a-z]*\}?", text), text  # a prefix of what the grammar allows
    assert "the sampler drew outside the grammar" in caplog.text  # (the case arose)


def test_an_ordinary_draw_is_unchanged(llama: LlamaModel, ctx: LlamaContext,
                                       grammars: GrammarCache) -> None:
    """Greedy under the grammar: the most likely allowed token each time."""
    row = _decode(ctx, "The weather in Paris today is")
    chain = SamplerChain(llama, SamplingParams(temperature=0.0), seed=1)
    text = _draw(grammars.constrain(chain, GRAMMAR), ctx, row, 4)
    assert re.fullmatch(r"\{[a-z]*\}?", text) and len(text) >= 4, text
