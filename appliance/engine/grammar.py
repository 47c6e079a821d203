"""Grammar-constrained sampling (structured outputs, forced tool calls), engine thread only.

llama.cpp's grammar sampler masks every token the grammar does not allow next; doing that
over the whole vocabulary (49k tokens for SmolLM2) costs 7-20 ms per token on a CPU, in
the engine thread that samples every sequence of the batch. So, as llama.cpp's own
``common_sampler`` does, a constrained sequence first samples as if unconstrained and asks
the grammar about that one token; only when the grammar refuses it is the distribution
masked and sampled again (sampling the unconstrained distribution and keeping a token the
grammar accepts, else drawing from the masked one, is exactly the masked distribution).
That second draw first masks only the ``_TOP_K`` most likely tokens and the end-of-
generation ones, which is almost always enough and 100x cheaper; when none of those is
allowed, the whole vocabulary is masked, through the binding that releases the GIL so the
event loop is not held up meanwhile.

:class:`GrammarCache` parses each distinct grammar once and clones the parsed prototype for
each sequence (``llama_sampler_clone``: microseconds, no parsing).
"""

from __future__ import annotations

import ctypes
import logging
from collections import OrderedDict
from typing import Any, cast

import llama_cpp
import numpy as np
import numpy.typing as npt

from appliance.engine.native import HOT as _hot
from appliance.engine.native import TOKEN_DATA as _TOKEN_DATA
from appliance.engine.native import LlamaContext, LlamaModel, SamplerChain

log = logging.getLogger("appliance.engine")

_TOP_K = 128
_CACHE_SIZE = 64


class GrammarRejected(Exception):
    """llama.cpp could not parse a grammar (a bug in whoever wrote it)."""




class Candidates:
    """A ``llama_token_data_array`` over a numpy buffer of the vocabulary's size, reused
    by every constrained sequence (the engine thread samples one at a time)."""

    def __init__(self, n_vocab: int) -> None:
        self.n_vocab = n_vocab
        self.data: npt.NDArray[Any] = np.zeros(n_vocab, dtype=_TOKEN_DATA)
        self.ids = np.arange(n_vocab, dtype=np.int32)
        self.array: Any = cast(Any, llama_cpp.llama_token_data_array())
        self.array.data = ctypes.cast(self.data.ctypes.data, llama_cpp.llama_token_data_p)
        self.ref = ctypes.addressof(self.array)
        self.one: npt.NDArray[Any] = np.zeros(1, dtype=_TOKEN_DATA)
        self.one_array: Any = cast(Any, llama_cpp.llama_token_data_array())
        self.one_array.data = ctypes.cast(self.one.ctypes.data, llama_cpp.llama_token_data_p)
        self.one_ref = ctypes.addressof(self.one_array)

    def fill(self, logits: npt.NDArray[np.float32], ids: npt.NDArray[np.int32] | None = None
             ) -> None:
        """Load all the logits (``ids`` None) or those of ``ids`` only."""
        n = self.n_vocab if ids is None else len(ids)
        self.data["id"][:n] = self.ids if ids is None else ids
        self.data["logit"][:n] = logits if ids is None else logits[ids]
        self.array.size = n
        self.array.selected = -1
        self.array.sorted = False

    def selected(self) -> int | None:
        """The token the last sampler chose; None when it chose none (a draw from NaN
        probabilities can leave the index out of range)."""
        at = int(self.array.selected)
        return int(self.data["id"][at]) if 0 <= at < self.array.size else None

    def best_allowed(self) -> int:
        """The most likely token the grammar left (after :meth:`any_allowed` said so)."""
        return int(self.data["id"][int(np.argmax(self.data["logit"][: self.array.size]))])

    def allows(self, grammar: Any, token: int) -> bool:
        """Whether ``grammar`` accepts ``token`` next (one candidate, microseconds)."""
        self.one[0] = (token, 1.0, 0.0)
        self.one_array.size = 1
        self.one_array.selected = -1
        self.one_array.sorted = False
        _hot.apply(grammar, self.one_ref)
        return bool(np.isfinite(self.one["logit"][0]))

    def any_allowed(self) -> bool:
        return bool(np.isfinite(self.data["logit"][: self.array.size]).any())


class ConstrainedSampler:
    """A sequence's sampler chain with a grammar (see the module doc); owns both."""

    def __init__(self, chain: SamplerChain, grammar: Any, candidates: Candidates,
                 eog: npt.NDArray[np.int32]) -> None:
        self._chain = chain
        self._grammar = grammar
        self._cand = candidates
        self._eog = eog

    def sample(self, ctx: LlamaContext, index: int) -> int:
        cand, chain, grammar = self._cand, self._chain.ptr, self._grammar
        logits = ctx.logits(index)
        cand.fill(logits)
        _hot.apply(chain, cand.ref)
        token = cand.selected()
        if token is None or not cand.allows(grammar, token):
            top = np.argpartition(logits, -_TOP_K)[-_TOP_K:].astype(np.int32)
            cand.fill(logits, np.union1d(top, self._eog).astype(np.int32))
            _hot.apply(grammar, cand.ref)
            if not cand.any_allowed():  # rare: the whole vocabulary, GIL released
                cand.fill(logits)
                llama_cpp.llama_sampler_apply(grammar, ctypes.byref(cand.array))
                if not cand.any_allowed():
                    # A dead end: accepting any token would abort llama.cpp; end here.
                    log.error("no token fits the grammar; ending the sequence")
                    return int(self._eog[0])
            fallback = cand.best_allowed()
            _hot.apply(chain, cand.ref)
            token = cand.selected()
            if token is None or not cand.allows(grammar, token):
                # The chain drew a token the grammar masked: non-finite logits (the
                # penalties or temperature past float32's range) make such a draw.
                # Accepting it would throw inside llama.cpp and abort the process.
                log.warning("the sampler drew outside the grammar; taking its most likely "
                            "allowed token")
                token = fallback
        _hot.accept(grammar, token)
        _hot.accept(chain, token)
        return token

    def close(self) -> None:
        self._chain.close()
        if self._grammar:
            llama_cpp.llama_sampler_free(self._grammar)
            self._grammar = None


class GrammarCache:
    """Parsed grammars by text, least recently used dropped past ``capacity``; engine
    thread only. :meth:`constrain` wraps a chain in a :class:`ConstrainedSampler`."""

    def __init__(self, model: LlamaModel, capacity: int = _CACHE_SIZE) -> None:
        self._model = model
        self._capacity = capacity
        self._parsed: OrderedDict[str, Any] = OrderedDict()
        self._candidates = Candidates(model.n_vocab)
        self._eog = np.flatnonzero(model.eog_mask).astype(np.int32)
        self.parses = 0  # how many grammars were parsed (the rest were cloned)

    def constrain(self, chain: SamplerChain, grammar: str) -> ConstrainedSampler:
        """``chain`` constrained by ``grammar`` (GBNF, start rule ``root``); raises
        :class:`GrammarRejected` (``chain`` closed) if llama.cpp cannot parse it."""
        try:
            proto = self._prototype(grammar)
        except GrammarRejected:
            chain.close()
            raise
        return ConstrainedSampler(chain, llama_cpp.llama_sampler_clone(proto),
                                  self._candidates, self._eog)

    def prepare(self, grammar: str) -> None:
        """Parse ``grammar`` now if it is not cached (raises :class:`GrammarRejected`)."""
        self._prototype(grammar)

    def _prototype(self, grammar: str) -> Any:
        proto = self._parsed.get(grammar)
        if proto is not None:
            self._parsed.move_to_end(grammar)
            return proto
        proto = llama_cpp.llama_sampler_init_grammar(self._model.vocab, grammar.encode(),
                                                     b"root")
        if not proto:
            raise GrammarRejected("llama.cpp could not parse the grammar")
        self.parses += 1
        self._parsed[grammar] = proto
        while len(self._parsed) > self._capacity:
            _, old = self._parsed.popitem(last=False)
            llama_cpp.llama_sampler_free(old)  # (sequences hold clones, never a prototype)
        return proto

    def close(self) -> None:
        while self._parsed:
            llama_cpp.llama_sampler_free(self._parsed.popitem()[1])
