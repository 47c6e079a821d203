"""``Draw`` samples what llama.cpp's chain samples: the same tokens may be drawn, with the
same probabilities (the chain's own samplers, applied to the real model's logits, are the
oracle), and draws follow them; it takes only what it can sample so."""

from __future__ import annotations

import ctypes
from collections import Counter
from collections.abc import Iterator
from typing import Any, cast

import llama_cpp
import numpy as np
import numpy.typing as npt
import pytest

from appliance.engine.draw import NUCLEUS_FLOORS, Draw, handles
from appliance.engine.native import (
    HOT,
    TOKEN_DATA,
    Batch,
    ContextConfig,
    LlamaContext,
    LlamaModel,
    SamplerChain,
)
from appliance.engine.types import SamplingParams

PLAIN = [
    SamplingParams(temperature=0.7),
    SamplingParams(temperature=1.0),
    SamplingParams(temperature=1.3),
    SamplingParams(temperature=0.7, top_p=0.95),
    SamplingParams(temperature=1.0, top_p=0.5),
    SamplingParams(temperature=1.0, top_p=0.999),
    SamplingParams(temperature=0.8, min_p=0.05),
    SamplingParams(temperature=0.9, top_p=0.9, min_p=0.1),
]


@pytest.fixture(scope="module")
def rows(llama: LlamaModel) -> Iterator[tuple[LlamaContext, list[int]]]:
    """A context holding the logits of three prompts' next tokens."""
    ctx = LlamaContext(llama, ContextConfig(n_ctx=512, n_seq_max=3, n_batch=128, n_threads=2))
    batch = Batch(128)
    found = []
    for seq, text in enumerate(["The weather in Paris today is",
                                "Write a short poem about rain.",
                                "1, 2, 3, 4,"]):
        tokens = ctx.model.tokenize(text, add_special=True, parse_special=False)
        found.append(batch.add_span(tokens, 0, seq, logits_last=True))
    assert ctx.decode(batch) == 0
    yield ctx, found
    ctx.close()


def _chain_probabilities(llama: LlamaModel, params: SamplingParams,
                         logits: npt.NDArray[np.float32]) -> dict[int, float]:
    """llama.cpp's chain on a copy of the row, every sampler but the draw, then the draw's
    softmax: the tokens it may draw and their probabilities."""
    chain = SamplerChain(llama, params, seed=1)
    data: npt.NDArray[Any] = np.zeros(llama.n_vocab, dtype=TOKEN_DATA)
    data["id"] = np.arange(llama.n_vocab, dtype=np.int32)
    data["logit"] = logits
    array: Any = cast(Any, llama_cpp.llama_token_data_array())
    array.data = ctypes.cast(data.ctypes.data, llama_cpp.llama_token_data_p)
    array.size, array.selected, array.sorted = llama.n_vocab, -1, False
    try:
        for i in range(int(HOT.chain_n(chain.ptr)) - 1):  # the last one is the draw
            HOT.apply(HOT.chain_get(chain.ptr, i), ctypes.addressof(array))
    finally:
        chain.close()
    kept = data[: int(array.size)]
    z = kept["logit"].astype(np.float64)
    p = np.exp(z - z.max())
    return dict(zip(kept["id"].tolist(), (p / p.sum()).tolist(), strict=True))


def _probabilities(draw: Draw, params: SamplingParams, logits: npt.NDArray[np.float32]
                   ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]:
    """The tokens ``draw`` may draw (what its cut keeps) and their probabilities at the
    temperature."""
    kept = draw.kept(logits)
    ids = np.arange(len(logits)) if kept is None else kept
    z = (logits[ids].astype(np.float64) - float(logits[ids].max())) / params.temperature
    e = np.exp(z)
    return ids, e / e.sum()


@pytest.mark.parametrize("params", PLAIN, ids=str)
def test_the_same_tokens_may_be_drawn_with_the_same_probabilities_as_the_chain(
        llama: LlamaModel, rows: tuple[LlamaContext, list[int]],
        params: SamplingParams) -> None:
    ctx, found = rows
    for row in found:
        logits = ctx.logits(row).copy()
        expected = _chain_probabilities(llama, params, logits)
        ids, probabilities = _probabilities(Draw(llama.n_vocab, params, seed=1), params,
                                            logits)
        got = dict(zip(ids.tolist(), probabilities.tolist(), strict=True))
        # The chain sums in float32, so where the nucleus ends in a long flat tail its last
        # tokens (each far under 0.1%) can differ; nothing else may.
        apart = got.keys() ^ expected.keys()
        assert all(max(got.get(t, 0.0), expected.get(t, 0.0)) < 1e-4 for t in apart)
        union = got.keys() | expected.keys()
        distance = sum(abs(got.get(t, 0.0) - expected.get(t, 0.0)) for t in union) / 2
        assert distance < 1e-3
        if params.top_p < 1.0 or params.min_p > 0.0:
            assert len(got) < llama.n_vocab  # (the cut took something away)


@pytest.mark.parametrize("params", [PLAIN[0], PLAIN[3], PLAIN[7]], ids=str)
def test_draws_follow_the_probabilities(llama: LlamaModel, rows: tuple[LlamaContext, list[int]],
                                        params: SamplingParams) -> None:
    ctx, found = rows
    logits = ctx.logits(found[0]).copy()
    draw = Draw(llama.n_vocab, params, seed=7)
    ids, probabilities = _probabilities(draw, params, logits)
    n = 5_000
    counts = Counter(draw.draw(logits) for _ in range(n))
    assert set(counts) <= set(ids.tolist())  # nothing outside what may be drawn
    expected = dict(zip(ids.tolist(), probabilities.tolist(), strict=True))
    for token, p in sorted(expected.items(), key=lambda kv: -kv[1])[:5]:
        sd = (p * (1 - p) / n) ** 0.5
        assert abs(counts[token] / n - p) < 5 * sd + 1e-4, (token, p, counts[token] / n)


def test_draws_from_the_context_are_seeded(llama: LlamaModel,
                                           rows: tuple[LlamaContext, list[int]]) -> None:
    ctx, found = rows
    params = SamplingParams(temperature=1.5)

    def run(seed: int) -> list[int]:
        draw = Draw(llama.n_vocab, params, seed)
        return [draw.sample(ctx, row) for row in found for _ in range(20)]

    assert run(11) == run(11)
    assert run(11) != run(12)


def test_a_nucleus_past_the_heavy_tokens_is_found_in_the_whole_row() -> None:
    """One token and a long tail each under the lowest floor of it: the tail's mass is
    needed, so the nucleus is read from the whole row, sorted."""
    n = 50_000
    logits = np.full(n, -14.0, dtype=np.float32)  # exp(-14) = 8.3e-7, under every floor
    logits[123] = 0.0
    assert np.exp(np.float32(-14.0)) < min(NUCLEUS_FLOORS)
    tail = (n - 1) * float(np.exp(np.float32(-14.0)))
    total = 1.0 + tail  # the top token holds 1 / total = 96%
    draw = Draw(n, SamplingParams(temperature=1.0, top_p=0.99), seed=3)
    kept = draw.kept(logits)
    assert kept is not None and kept[0] == 123
    # just enough of the (equal) tail tokens to reach 0.99 of the mass
    assert len(kept) == 1 + int(np.ceil((0.99 * total - 1.0) / np.exp(np.float32(-14.0))))
    assert draw.kept(np.where(np.arange(n) == 123, 0.0, -30.0).astype(np.float32)) \
        is not None  # (and with a negligible tail, the top token alone)


def test_only_what_the_chain_would_sample_the_same_is_taken() -> None:
    assert all(handles(p) for p in PLAIN)
    for params in (SamplingParams(temperature=0.0), SamplingParams(top_k=40),
                   SamplingParams(repeat_penalty=1.1), SamplingParams(presence_penalty=0.5),
                   SamplingParams(frequency_penalty=0.5), SamplingParams(logit_bias=((5, 1.0),))):
        assert not handles(params)
        with pytest.raises(ValueError):
            Draw(100, params, seed=0)
