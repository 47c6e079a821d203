"""Log-probabilities of sampled tokens, for the sequences that ask for them.

Which distribution: the model's next-token distribution after the request's logit bias and
repetition penalties, before temperature and the top-k / top-p / min-p cut; that is,
``log_softmax(logits + bias - penalties)`` at temperature 1. So a log-probability does not
change with the temperature (as OpenAI's do not), a token a ``logit_bias`` of -100 banned
shows it, and at temperature 0 the sampled token is the most likely one. (llama.cpp's server
reports the softmax of the raw logits by default, before bias and penalties.)

How, in the engine thread: the sequence's own sampler chain runs in two parts over one
token-data array: its first ``SamplerChain.n_pre`` samplers (bias, penalties), then the
log-softmax is read, then the rest (the cut, temperature, the draw) picks the token, and the
whole chain accepts it. These are the steps ``llama_sampler_sample`` takes, so a seed draws
the same tokens with or without log-probabilities. A sequence sampled by ``draw.Draw`` (no
bias, no penalties: the log-softmax of the row itself) draws from the row as it would
without them. Sequences that did not ask never come here and pay nothing.

``detok.LogprobTrail`` hands each entry to the client with the end of its token's text.
"""

from __future__ import annotations

import ctypes
from typing import Any

import llama_cpp
import numpy as np
import numpy.typing as npt

from appliance.engine.draw import Draw
from appliance.engine.native import HOT as _hot
from appliance.engine.native import TOKEN_DATA as _TOKEN_DATA
from appliance.engine.native import LlamaContext, LlamaModel, SamplerChain
from appliance.engine.types import TokenLogprob, TopLogprob

MAX_TOP = 20  # alternatives per token, as OpenAI allows
_FLOOR = -9999.0  # a probability of (nearly) zero, as OpenAI writes it (never -inf in JSON)


def log_normaliser(logits: npt.NDArray[np.float32]) -> float:
    """``log(sum(exp(logits)))``, computed stably: a logit minus it is a log-probability."""
    top = float(logits.max())
    return top + float(np.log(np.exp(logits - top, dtype=np.float32).sum(dtype=np.float64)))


def entry(model: LlamaModel, token: int, ids: npt.NDArray[np.int32],
          logits: npt.NDArray[np.float32], top: int) -> TokenLogprob:
    """The sampled ``token``'s entry with the ``top`` most likely candidates, most likely
    first (``ids[i]`` has ``logits[i]``)."""
    norm = log_normaliser(logits)
    at = token if token < ids.size and ids[token] == token else None  # (usually in place)
    if at is None:
        where = np.flatnonzero(ids == token)
        at = int(where[0]) if where.size else None
    own = float(logits[at]) - norm if at is not None else _FLOOR
    alternatives: tuple[TopLogprob, ...] = ()
    if top > 0:
        k = min(top, ids.size)
        best = np.argpartition(logits, logits.size - k)[logits.size - k:]
        best = best[np.argsort(-logits[best], kind="stable")]
        alternatives = tuple(TopLogprob(int(ids[i]), model.piece(int(ids[i])),
                                        max(float(logits[i]) - norm, _FLOOR)) for i in best)
    return TokenLogprob(token, model.piece(token), max(own, _FLOOR), alternatives)


class LogprobSampler:
    """Samples a row like ``SamplerChain.sample`` and reports the token's log-probability.
    Engine thread only (one token-data buffer, reused)."""

    def __init__(self, model: LlamaModel) -> None:
        self._model = model
        self._data = np.zeros(model.n_vocab, dtype=_TOKEN_DATA)
        self._ids = np.arange(model.n_vocab, dtype=np.int32)
        self._array = llama_cpp.llama_token_data_array()
        self._ref = ctypes.addressof(self._array)

    def sample(self, chain: SamplerChain, ctx: LlamaContext, row: int,
               top: int) -> tuple[int, TokenLogprob]:
        n_vocab = self._model.n_vocab
        data = self._data
        data["id"] = self._ids
        data["logit"] = ctx.logits(row)
        data["p"] = 0.0
        array: Any = self._array
        array.data = data.ctypes.data_as(llama_cpp.llama_token_data_p)
        array.size, array.selected, array.sorted = n_vocab, -1, False
        n_all = int(_hot.chain_n(chain.ptr))
        for i in range(chain.n_pre):
            _hot.apply(_hot.chain_get(chain.ptr, i), self._ref)
        size = int(array.size)
        ids = data["id"][:size].copy()
        logits = data["logit"][:size].copy()
        for i in range(chain.n_pre, n_all):
            _hot.apply(_hot.chain_get(chain.ptr, i), self._ref)
        if not 0 <= array.selected < array.size:  # (a draw from NaN probabilities)
            raise RuntimeError("the sampler chain selected no token")
        token = int(array.data[array.selected].id)
        _hot.accept(chain.ptr, token)
        return token, entry(self._model, token, ids, logits, top)

    def drawn(self, sampler: Draw, ctx: LlamaContext, row: int,
              top: int) -> tuple[int, TokenLogprob]:
        """Samples a row like ``Draw.sample``, with the token's log-probability."""
        logits = ctx.logits(row)
        token = sampler.draw(logits)
        return token, entry(self._model, token, self._ids, logits, top)
