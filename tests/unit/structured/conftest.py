"""llama.cpp's own grammar engine, on the default GGUF model's vocabulary, as the oracle of
what a grammar accepts."""

from __future__ import annotations

import ctypes
import time
from typing import Any

import llama_cpp
import numpy as np
import pytest

from appliance.engine.grammar import Candidates, _hot
from appliance.engine.native import LlamaModel


class Oracle:
    """Asks llama.cpp whether a grammar parses, and whether it accepts a text whole."""

    def __init__(self, model: LlamaModel) -> None:
        self.model = model
        self._cand = Candidates(model.n_vocab)

    def parses(self, grammar: str) -> bool:
        g = llama_cpp.llama_sampler_init_grammar(self.model.vocab, grammar.encode(), b"root")
        if g:
            llama_cpp.llama_sampler_free(g)
        return bool(g)

    def accepts(self, grammar: str, text: str) -> bool:
        g: Any = llama_cpp.llama_sampler_init_grammar(self.model.vocab, grammar.encode(),
                                                      b"root")
        assert g, "llama.cpp refused the grammar"
        try:
            for token in self.model.tokenize(text, add_special=False, parse_special=False):
                if not self._cand.allows(g, token):
                    return False
                _hot.accept(g, token)
            return self._cand.allows(g, self.model.eos)  # complete: the end may come
        finally:
            llama_cpp.llama_sampler_free(g)


    def mask_seconds(self, grammar: str) -> float:
        """How long llama.cpp takes to mask the whole vocabulary under ``grammar``'s first
        step (the engine's rare full mask)."""
        g: Any = llama_cpp.llama_sampler_init_grammar(self.model.vocab, grammar.encode(),
                                                      b"root")
        assert g, "llama.cpp refused the grammar"
        try:
            self._cand.fill(np.zeros(self.model.n_vocab, dtype=np.float32))
            started = time.perf_counter()
            llama_cpp.llama_sampler_apply(g, ctypes.byref(self._cand.array))
            return time.perf_counter() - started
        finally:
            llama_cpp.llama_sampler_free(g)


@pytest.fixture(scope="session")
def oracle(llama: LlamaModel) -> Oracle:
    return Oracle(llama)
