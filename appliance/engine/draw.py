"""Plain sampling drawn in numpy from a row's logits, instead of llama.cpp's sampler chain.

A request with no top-k, no penalty, no logit bias and no grammar (the OpenAI defaults with
a temperature, and ``top_p`` or ``min_p``; with log-probabilities or without) samples the chain
``SamplerChain`` builds for it: the nucleus (``top_p``) and the ``min_p`` cut, both taken on
``softmax(logits)``, then ``softmax(logits / T)`` over what is left. llama.cpp's chain does
it on a token-data array of the whole vocabulary, filled and scanned with scalar code per
row, and its nucleus sorts that array whenever 256 tokens do not reach ``top_p``. With
SmolLM2's 49,152 tokens on 2 cores: 0.32 ms a row with a temperature alone, 3.0 ms with
``top_p = 0.95``; at 16 sequences 5.1 ms and 48 ms of every step, whose decode takes about
60 ms. ``Draw`` reads the row in place, in a few vectorised passes:

- the weights ``exp((logit - max) / T)``, summed per block of 256 tokens; the draw picks a
  block from the blocks' running sums, then a token inside it;
- the nucleus is sought among the tokens whose weight at ``T = 1`` is at least a floor times
  the top one's (``NUCLEUS_FLOORS``: the first few, sorted, reach ``top_p`` as a rule; then
  more); only if the lowest floor falls short is the whole row sorted. Every token left out
  weighs less than every token kept, so the nucleus found is the same.

The distribution is the chain's (``tests/unit/test_draw.py`` compares them on the real
model's logits); the random stream is not: numpy's PCG64 seeded with the request's seed, not
llama.cpp's mt19937. A seed gives the same text from one run of the appliance to the next,
not the text llama.cpp's own sampler or llama-server would draw with it.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from appliance.engine.native import LlamaContext
from appliance.engine.types import SamplingParams

BLOCK = 256
# The nucleus is sought among the tokens whose weight is at least this much of the top
# one's, at each floor in turn; past the last, in the whole row.
NUCLEUS_FLOORS = (1e-2, 1e-4, 1e-6)

Floats = npt.NDArray[np.float32]
Ids = npt.NDArray[np.intp]


def handles(params: SamplingParams) -> bool:
    """Whether ``Draw`` samples these parameters as ``SamplerChain`` would (no top-k, no
    penalty, no bias; a temperature above the greedy bar)."""
    return (not params.greedy and params.top_k <= 0 and not params.logit_bias
            and not params.penalised)


class Draw:
    """One sequence's sampler for parameters ``handles`` accepts (the engine thread's)."""

    def __init__(self, n_vocab: int, params: SamplingParams, seed: int) -> None:
        if not handles(params):
            raise ValueError(f"Draw cannot sample {params}")
        self._n = n_vocab
        self._inv_t = 1.0 / params.temperature
        self._top_p = params.top_p
        self._log_min_p = math.log(params.min_p) if params.min_p > 0.0 else None
        self._rng = np.random.Generator(np.random.PCG64(seed & 0xFFFFFFFF))
        # Weights, zero past the vocabulary's end so that every block is whole.
        self._w: Floats = np.zeros(-(-n_vocab // BLOCK) * BLOCK, dtype=np.float32)
        self._blocks = self._w.reshape(-1, BLOCK)

    def sample(self, ctx: LlamaContext, index: int) -> int:
        """Sample from the logits of batch row ``index``."""
        return self.draw(ctx.logits(index))

    def close(self) -> None:
        pass

    def draw(self, logits: Floats) -> int:
        u = float(self._rng.random())
        kept = self.kept(logits)
        if kept is None:
            return self._draw_all(logits, u)
        return _draw_among(logits, kept, self._inv_t, u)

    def kept(self, logits: Floats) -> Ids | None:
        """The tokens the nucleus and the ``min_p`` cut leave (None: every token)."""
        if self._top_p >= 1.0 and self._log_min_p is None:
            return None
        top = float(logits.max())
        kept = self._nucleus(logits, top) if self._top_p < 1.0 else None
        if self._log_min_p is not None:
            floor = np.float32(top + self._log_min_p)
            kept = np.flatnonzero(logits >= floor) if kept is None else \
                kept[logits[kept] >= floor]
        return kept

    def _nucleus(self, logits: Floats, top: float) -> Ids:
        w = self._w[: self._n]
        np.subtract(logits, np.float32(top), out=w)
        np.exp(w, out=w)
        need = self._top_p * float(w.sum(dtype=np.float64))
        for floor in NUCLEUS_FLOORS:  # the heaviest tokens first, then more of them
            heavy = np.flatnonzero(w >= floor)
            ranked = heavy[np.argsort(-w[heavy])]
            n = _reach(w, ranked, need)
            if n is not None:
                return ranked[:n]
        ranked = np.argsort(-w)  # they fall short: the whole row, sorted
        return ranked[: _reach(w, ranked, need) or self._n]  # (or rounding: all of it)

    def _draw_all(self, logits: Floats, u: float) -> int:
        w = self._w[: self._n]
        np.subtract(logits, logits.max(), out=w)
        w *= np.float32(self._inv_t)
        np.exp(w, out=w)
        running = np.cumsum(self._blocks.sum(axis=1, dtype=np.float64))
        total = float(running[-1])
        if not math.isfinite(total) or total <= 0.0:  # NaN logits: the top token
            return int(np.nanargmax(logits))
        target = u * total
        block = min(int(np.searchsorted(running, target, side="right")), len(running) - 1)
        before = float(running[block - 1]) if block else 0.0
        inside = np.cumsum(self._blocks[block], dtype=np.float64)
        token = block * BLOCK + int(np.searchsorted(inside, target - before, side="right"))
        if token >= self._n or w[min(token, self._n - 1)] == 0.0:
            # (rounding at the very top of the sums: the last token with any weight)
            token = int(np.flatnonzero(w[: min(token, self._n - 1) + 1])[-1])
        return token


def _reach(w: Floats, ranked: Ids, need: float) -> int | None:
    """How many of ``ranked`` (by weight, descending) it takes to reach ``need``."""
    running = np.cumsum(w[ranked], dtype=np.float64)
    n = int(np.searchsorted(running, need, side="left")) + 1
    return n if n <= len(ranked) else None


def _draw_among(logits: Floats, ids: Ids, inv_t: float, u: float) -> int:
    z = logits[ids].astype(np.float64)
    e = np.exp((z - z.max()) * inv_t)
    running = np.cumsum(e)
    return int(ids[min(int(np.searchsorted(running, u * running[-1], side="right")),
                       len(ids) - 1)])
