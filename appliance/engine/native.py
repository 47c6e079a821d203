"""A small typed layer over llama.cpp's C API (through llama-cpp-python's ctypes bindings).

Only the engine thread touches a ``LlamaContext`` or a ``SamplerChain``. A ``LlamaModel``'s
vocabulary functions (tokenize, piece, metadata) are read-only and may be called from any
thread.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import llama_cpp
import numpy as np
import numpy.typing as npt

from appliance.engine.types import SamplingParams
from appliance.errors import ModelError

_backend_lock = threading.Lock()
_backend_state: dict[str, bool] = {}


class _HotCalls:
    """The calls made many times per decode step, through a ``PyDLL`` handle on the same
    library: they keep the GIL. Through llama-cpp-python's ``CDLL`` every call releases
    and re-takes the GIL, and each re-take can wait a whole switch interval (5 ms) while
    the event-loop thread runs: sixteen samples per step cost up to 80 ms that way.
    Only ``llama_decode`` (long, and worth running beside the event loop) releases it."""

    def __init__(self) -> None:
        lib = ctypes.PyDLL(llama_cpp.llama_cpp._lib._name)
        self.sample = lib.llama_sampler_sample
        self.sample.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32]
        self.sample.restype = ctypes.c_int32
        self.token_to_piece = lib.llama_token_to_piece
        self.token_to_piece.argtypes = [ctypes.c_void_p, ctypes.c_int32, ctypes.c_char_p,
                                        ctypes.c_int32, ctypes.c_int32, ctypes.c_bool]
        self.token_to_piece.restype = ctypes.c_int32
        # Per sample read in Python (``LlamaContext.logits``: draw.py, grammar.py, logprobs.py).
        self.logits_ith = lib.llama_get_logits_ith
        self.logits_ith.argtypes = [ctypes.c_void_p, ctypes.c_int32]
        self.logits_ith.restype = ctypes.POINTER(ctypes.c_float)
        self.apply = lib.llama_sampler_apply
        self.apply.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        self.apply.restype = None
        self.accept = lib.llama_sampler_accept
        self.accept.argtypes = [ctypes.c_void_p, ctypes.c_int32]
        self.accept.restype = None
        self.chain_get = lib.llama_sampler_chain_get
        self.chain_get.argtypes = [ctypes.c_void_p, ctypes.c_int32]
        self.chain_get.restype = ctypes.c_void_p
        self.chain_n = lib.llama_sampler_chain_n
        self.chain_n.argtypes = [ctypes.c_void_p]
        self.chain_n.restype = ctypes.c_int


# llama_token_data {int32 id; float logit; float p}, for arrays numpy fills in place.
TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])
HOT = _HotCalls()  # the process's one GIL-keeping handle; engine thread callers only
_hot = HOT


def _backend_init() -> None:
    with _backend_lock:
        if not _backend_state.get("init"):
            # llama-cpp-python prints every native log line unless its logger is raised.
            logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
            llama_cpp.llama_backend_init()
            _backend_state["init"] = True


def system_info() -> str:
    return bytes(llama_cpp.llama_print_system_info()).decode("utf-8", "replace").strip()


def supports_gpu_offload() -> bool:
    return bool(llama_cpp.llama_supports_gpu_offload())


SPLIT_MODES = {"none": llama_cpp.LLAMA_SPLIT_MODE_NONE,
               "layer": llama_cpp.LLAMA_SPLIT_MODE_LAYER,
               "row": llama_cpp.LLAMA_SPLIT_MODE_ROW}


def model_params(n_gpu_layers: int, split_mode: str, main_gpu: int) -> Any:
    """``llama_model_params`` for a GPU offload (``n_gpu_layers`` -1: all layers) split
    across GPUs as ``split_mode`` says (a name of :data:`SPLIT_MODES`)."""
    params = llama_cpp.llama_model_default_params()
    params.n_gpu_layers = 2**31 - 1 if n_gpu_layers < 0 else n_gpu_layers
    params.split_mode = SPLIT_MODES[split_mode]
    params.main_gpu = main_gpu
    return params


class LlamaModel:
    """A loaded GGUF model and its vocabulary."""

    def __init__(self, path: Path, *, n_gpu_layers: int = 0, split_mode: str = "layer",
                 main_gpu: int = 0) -> None:
        _backend_init()
        params = model_params(n_gpu_layers, split_mode, main_gpu)
        ptr = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
        if not ptr:
            raise ModelError(f"llama.cpp could not load the model file {path}")
        self.ptr: Any = ptr
        self.vocab: Any = llama_cpp.llama_model_get_vocab(ptr)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self.vocab))
        self.n_layer = int(llama_cpp.llama_model_n_layer(ptr))
        self.bos = int(llama_cpp.llama_vocab_bos(self.vocab))
        self.eos = int(llama_cpp.llama_vocab_eos(self.vocab))
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self.vocab))
        self._eog = np.zeros(self.n_vocab, dtype=bool)
        for t in range(self.n_vocab):
            if llama_cpp.llama_vocab_is_eog(self.vocab, t):
                self._eog[t] = True
        self._piece_cache: dict[int, bytes] = {}

    def close(self) -> None:
        if self.ptr:
            llama_cpp.llama_model_free(self.ptr)
            self.ptr = None

    # --- metadata -----------------------------------------------------------------------
    def chat_template(self) -> str | None:
        raw = llama_cpp.llama_model_chat_template(self.ptr, None)
        return raw.decode("utf-8", "replace") if raw else None

    def token_text(self, token: int) -> str:
        """The piece of a special token as text (e.g. ``<|im_end|>``)."""
        return self.piece(token, special=True).decode("utf-8", "replace")

    # --- tokens -------------------------------------------------------------------------
    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        data = text.encode("utf-8")
        cap = len(data) + 8
        while True:
            arr = (llama_cpp.llama_token * cap)()
            n = llama_cpp.llama_tokenize(
                self.vocab, data, len(data), arr, cap, add_special, parse_special
            )
            if n >= 0:
                return list(arr[:n])
            cap = -n

    def piece(self, token: int, *, special: bool = False) -> bytes:
        if not special:
            cached = self._piece_cache.get(token)
            if cached is not None:
                return cached
        buf = ctypes.create_string_buffer(64)
        n = _hot.token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = _hot.token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        out = buf.raw[:n]
        if not special:
            self._piece_cache[token] = out
        return out

    def is_eog(self, token: int) -> bool:
        return bool(self._eog[token])

    @property
    def eog_mask(self) -> npt.NDArray[np.bool_]:
        """True at every end-of-generation token (read-only use)."""
        return self._eog

    @functools.cached_property
    def control_tokens(self) -> dict[str, int]:
        """The text of every token llama.cpp only recognises with ``parse_special`` (control
        and unknown tokens: ``<|im_start|>``, ``<s>`` ...), by text."""
        mask = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN
        out: dict[str, int] = {}
        for t in range(self.n_vocab):
            if llama_cpp.llama_vocab_get_attr(self.vocab, t) & mask:
                text = self.token_text(t)
                if text:
                    out.setdefault(text, t)
        return out


@dataclass(frozen=True)
class ContextConfig:
    n_ctx: int  # total KV cells (all sequences)
    n_seq_max: int
    n_batch: int
    n_threads: int
    kv_unified: bool = False


class Batch:
    """A reusable ``llama_batch`` whose arrays are owned by numpy (one seq id per token)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.token: npt.NDArray[np.int32] = np.zeros(capacity, dtype=np.int32)
        self.pos: npt.NDArray[np.int32] = np.zeros(capacity, dtype=np.int32)
        self.n_seq_id: npt.NDArray[np.int32] = np.ones(capacity, dtype=np.int32)
        self.seq: npt.NDArray[np.int32] = np.zeros(capacity, dtype=np.int32)
        self.logits: npt.NDArray[np.int8] = np.zeros(capacity, dtype=np.int8)
        i32p = ctypes.POINTER(ctypes.c_int32)
        base = self.seq.ctypes.data
        self._seq_ptrs = (i32p * capacity)(
            *[ctypes.cast(base + 4 * i, i32p) for i in range(capacity)]
        )
        self.struct: Any = cast(Any, llama_cpp.llama_batch())
        self.struct.token = self.token.ctypes.data_as(i32p)
        self.struct.embd = ctypes.POINTER(ctypes.c_float)()
        self.struct.pos = self.pos.ctypes.data_as(i32p)
        self.struct.n_seq_id = self.n_seq_id.ctypes.data_as(i32p)
        self.struct.seq_id = ctypes.cast(self._seq_ptrs, ctypes.POINTER(i32p))
        self.struct.logits = self.logits.ctypes.data_as(ctypes.POINTER(ctypes.c_int8))
        self.n = 0

    def clear(self) -> None:
        self.n = 0

    def add(self, token: int, pos: int, seq: int, logits: bool) -> int:
        i = self.n
        self.token[i] = token
        self.pos[i] = pos
        self.seq[i] = seq
        self.logits[i] = 1 if logits else 0
        self.n = i + 1
        return i

    def add_span(self, tokens: list[int], pos0: int, seq: int, logits_last: bool) -> int:
        """Add a run of one sequence's tokens; returns the index of the last one."""
        i, k = self.n, len(tokens)
        self.token[i : i + k] = tokens
        self.pos[i : i + k] = np.arange(pos0, pos0 + k, dtype=np.int32)
        self.seq[i : i + k] = seq
        self.logits[i : i + k] = 0
        if logits_last:
            self.logits[i + k - 1] = 1
        self.n = i + k
        return i + k - 1


class LlamaContext:
    """The llama.cpp context: KV cache for all sequences, decode, memory ops."""

    def __init__(self, model: LlamaModel, cfg: ContextConfig) -> None:
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = cfg.n_ctx
        params.n_batch = cfg.n_batch
        params.n_ubatch = min(cfg.n_batch, 512)
        params.n_seq_max = cfg.n_seq_max
        params.n_threads = cfg.n_threads
        params.n_threads_batch = cfg.n_threads
        params.kv_unified = cfg.kv_unified
        params.no_perf = True
        ptr = llama_cpp.llama_init_from_model(model.ptr, params)
        if not ptr:
            raise ModelError(
                f"llama.cpp could not create a context of {cfg.n_ctx} tokens for "
                f"{cfg.n_seq_max} sequences (out of memory?)"
            )
        self.ptr: Any = ptr
        self.model = model
        self.cfg = cfg
        self.mem: Any = llama_cpp.llama_get_memory(ptr)
        self.n_ctx = int(llama_cpp.llama_n_ctx(ptr))
        self._state: Any = (ctypes.c_uint8 * 0)()  # copy_seq's buffer, grown as needed

    def close(self) -> None:
        if self.ptr:
            llama_cpp.llama_free(self.ptr)
            self.ptr = None

    def decode(self, batch: Batch) -> int:
        batch.struct.n_tokens = batch.n
        return int(llama_cpp.llama_decode(self.ptr, batch.struct))

    def logits(self, row: int) -> npt.NDArray[np.float32]:
        """The logits of batch row ``row`` of the last decode, in place (valid until the
        next decode; engine thread only)."""
        return np.ctypeslib.as_array(_hot.logits_ith(self.ptr, row), shape=(self.model.n_vocab,))

    def seq_rm(self, seq: int, p0: int = -1, p1: int = -1) -> bool:
        return bool(llama_cpp.llama_memory_seq_rm(self.mem, seq, p0, p1))

    def copy_seq(self, src: int, dst: int) -> bool:
        """Make ``dst``'s cache a copy of ``src``'s, now; False if it could not (``dst`` is
        then empty).

        With one KV stream per sequence (``kv_unified`` off), ``llama_memory_seq_cp``
        between streams copies the whole stream, every cell of the context, used or not
        (47 MB for SmolLM2-135M at 2048 cells, about 3 ms), at the next decode. The
        sequence's state (``llama_state_seq_get_data``/``set_data``) holds only its used
        cells: 0.9 MB and about 0.2 ms for a 40-token prompt. In a unified cache a copy
        is only cell metadata, so ``seq_cp`` stays."""
        if src == dst:
            return True
        if self.cfg.kv_unified:
            self.seq_rm(dst)
            llama_cpp.llama_memory_seq_cp(self.mem, src, dst, -1, -1)
            return True
        size = int(llama_cpp.llama_state_seq_get_size(self.ptr, src))
        if len(self._state) < size:
            self._state = (ctypes.c_uint8 * size)()
        got = int(llama_cpp.llama_state_seq_get_data(self.ptr, self._state, size, src))
        if got == 0 or int(llama_cpp.llama_state_seq_set_data(self.ptr, self._state, got,
                                                               dst)) == 0:
            self.seq_rm(dst)
            return False
        return True

    def seq_pos_max(self, seq: int) -> int:
        return int(llama_cpp.llama_memory_seq_pos_max(self.mem, seq))

    def clear_memory(self) -> None:
        llama_cpp.llama_memory_clear(self.mem, True)


class SamplerChain:
    """One sequence's llama.cpp sampler chain, built from its ``SamplingParams``."""

    def __init__(self, model: LlamaModel, params: SamplingParams, seed: int) -> None:
        sp = llama_cpp.llama_sampler_chain_default_params()
        sp.no_perf = True
        chain = llama_cpp.llama_sampler_chain_init(sp)
        self.ptr: Any = chain
        add = llama_cpp.llama_sampler_chain_add
        if params.logit_bias:
            arr: Any = (llama_cpp.llama_logit_bias * len(params.logit_bias))()
            for i, (tok, bias) in enumerate(params.logit_bias):
                arr[i].token = tok
                arr[i].bias = bias
            add(chain, llama_cpp.llama_sampler_init_logit_bias(
                model.n_vocab, len(params.logit_bias), arr))
        if params.penalised:
            add(chain, llama_cpp.llama_sampler_init_penalties(
                model.n_vocab, params.penalty_last_n, params.repeat_penalty,
                params.frequency_penalty, params.presence_penalty))
        # The samplers so far reshape the distribution; log-probabilities are read after
        # them and before the rest (engine/logprobs.py).
        self.n_pre = int(llama_cpp.llama_sampler_chain_n(chain))
        if params.greedy:
            add(chain, llama_cpp.llama_sampler_init_greedy())
            return
        if params.top_k > 0:
            add(chain, llama_cpp.llama_sampler_init_top_k(params.top_k))
        if params.top_p < 1.0:
            add(chain, llama_cpp.llama_sampler_init_top_p(params.top_p, 1))
        if params.min_p > 0.0:
            add(chain, llama_cpp.llama_sampler_init_min_p(params.min_p, 1))
        add(chain, llama_cpp.llama_sampler_init_temp(params.temperature))
        add(chain, llama_cpp.llama_sampler_init_dist(seed & 0xFFFFFFFF))

    def sample(self, ctx: LlamaContext, index: int) -> int:
        """Sample from the logits of batch row ``index`` (and accept the token)."""
        return int(_hot.sample(self.ptr, ctx.ptr, index))

    def close(self) -> None:
        if self.ptr:
            llama_cpp.llama_sampler_free(self.ptr)
            self.ptr = None
