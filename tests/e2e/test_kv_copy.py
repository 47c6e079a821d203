"""Copying one sequence's KV cache into another (prefix reuse, slot parking), with the real
default model and llama.cpp context: the copy is exact, replaces what the target held, and
costs what the sequence holds, not the whole context."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import llama_cpp
import numpy as np
import pytest

from appliance import config
from appliance.engine.models import ModelStore
from appliance.engine.native import Batch, ContextConfig, LlamaContext, LlamaModel

PER_SEQ = 2048


@pytest.fixture(scope="module")
def model() -> Iterator[LlamaModel]:
    settings = config.load(env={})
    store = ModelStore(settings.manifest, settings.models_dir)
    path: Path = store.verify(store.resolve(settings.model)).path
    loaded = LlamaModel(path)
    yield loaded
    loaded.close()


def _context(model: LlamaModel, unified: bool) -> LlamaContext:
    return LlamaContext(model, ContextConfig(n_ctx=PER_SEQ * 4, n_seq_max=4, n_batch=256,
                                             n_threads=2, kv_unified=unified))


def _prefill(ctx: LlamaContext, batch: Batch, seq: int, tokens: list[int]) -> None:
    batch.clear()
    batch.add_span(tokens, 0, seq, True)
    assert ctx.decode(batch) == 0


def _next_logits(ctx: LlamaContext, batch: Batch, seqs: list[int], pos: int,
                 n_vocab: int) -> list[np.ndarray]:
    """Decode one and the same token at ``pos`` in each sequence: their logits."""
    batch.clear()
    for seq in seqs:
        batch.add(42, pos, seq, True)
    assert ctx.decode(batch) == 0
    return [np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx.ptr, i),
                                  shape=(n_vocab,)).copy() for i in range(len(seqs))]


@pytest.mark.parametrize("unified", [False, True], ids=["stream-per-sequence", "unified"])
def test_a_copied_sequence_continues_exactly_like_its_source(model: LlamaModel,
                                                             unified: bool) -> None:
    ctx = _context(model, unified)
    batch = Batch(256)
    try:
        prompt = list(range(300, 340))
        _prefill(ctx, batch, 0, prompt)
        _prefill(ctx, batch, 1, list(range(900, 960)))  # the target holds something else
        assert ctx.copy_seq(0, 1)
        assert ctx.seq_pos_max(1) == len(prompt) - 1  # replaced, not merged
        a, b = _next_logits(ctx, batch, [0, 1], len(prompt), model.n_vocab)
        np.testing.assert_array_equal(a, b)
        # an untouched sequence is not disturbed by the copy
        assert ctx.seq_pos_max(2) == -1
    finally:
        ctx.close()


def test_a_copy_moves_the_sequence_not_the_whole_context(model: LlamaModel) -> None:
    ctx = _context(model, unified=False)
    batch = Batch(256)
    try:
        _prefill(ctx, batch, 0, list(range(300, 340)))
        size = int(llama_cpp.llama_state_seq_get_size(ctx.ptr, 0))
        # one cell of SmolLM2-135M: K and V of 30 layers x 192 values x 2 bytes = 23 KB;
        # the copy holds the 40 used cells, not the 2048 of the sequence's stream (47 MB)
        cell = 2 * 30 * 192 * 2
        assert 40 * cell <= size < 50 * cell
        assert ctx.copy_seq(0, 3)
        assert ctx.seq_pos_max(3) == 39
    finally:
        ctx.close()
