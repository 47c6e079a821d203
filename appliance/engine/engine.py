"""The engine: one thread owns the llama.cpp model and context and runs continuous batching.

Each step builds one ``llama_batch`` holding the next token of every running sequence
plus chunks of waiting prompts (chunked prefill), calls ``llama_decode`` once, and samples
every sequence that produced logits with its own llama.cpp sampler chain. New requests
join at the next step; finished or cancelled ones leave and free their slot. A slot keeps
its sequence's KV cells afterwards, so a later prompt with the same prefix reuses them.

The event loop talks to the thread through ``submit`` (thread-safe inbox) and receives a
whole step's events in one ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import queue
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from appliance.engine.cpu_turns import CpuTurns, engine_turn
from appliance.engine.detok import StopMatcher, Utf8Stream
from appliance.engine.native import (
    Batch,
    ContextConfig,
    LlamaContext,
    LlamaModel,
    SamplerChain,
    supports_gpu_offload,
    system_info,
)
from appliance.engine.slots import Slot, place
from appliance.engine.stream import Stream
from appliance.engine.types import Event, Finished, FinishReason, GenerationRequest, TextDelta
from appliance.errors import ModelError

log = logging.getLogger("appliance.engine")


@dataclass(frozen=True)
class EngineConfig:
    model_path: Path
    parallel: int
    ctx_size: int  # per sequence
    batch_size: int
    n_threads: int
    n_gpu_layers: int = 0
    split_mode: str = "layer"  # across several GPUs: layer, row or none (main_gpu only)
    main_gpu: int = 0
    prefix_reuse_min: int = 16  # 0: prefix reuse off
    default_seed: int = -1


# Upper bounds (inclusive) of the decode batch-size histogram, in tokens per llama_decode.
BATCH_SIZE_BOUNDS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)


@dataclass
class EngineStats:
    """Read from other threads without locking (plain counters and gauges)."""

    running: int = 0
    waiting: int = 0
    steps: int = 0
    decoded_tokens: int = 0
    generated_tokens: int = 0
    reused_tokens: int = 0
    admitted: int = 0  # sequences given a slot (also the clock of Slot.used)
    kv_cells_used: int = 0
    kv_cells_total: int = 0
    last_batch_size: int = 0
    batch_sizes: deque[int] = field(default_factory=lambda: deque(maxlen=1024))
    # Steps per batch size, one count per BATCH_SIZE_BOUNDS bound then +Inf (not cumulative).
    batch_size_counts: list[int] = field(
        default_factory=lambda: [0] * (len(BATCH_SIZE_BOUNDS) + 1))
    batch_size_sum: int = 0

    def count_batch(self, n: int) -> None:
        """One decode step of ``n`` tokens (engine thread; a bisect and two additions)."""
        self.batch_size_counts[bisect.bisect_left(BATCH_SIZE_BOUNDS, n)] += 1
        self.batch_size_sum += n


class _Seq:
    __slots__ = (
        "cached", "detok", "n_gen", "next_token", "pending", "sampler", "slot",
        "stops", "stream", "t_first", "t_sched", "t_submit",
    )

    def __init__(self, stream: Stream, slot: Slot, sampler: SamplerChain, keep: int) -> None:
        req = stream.request
        self.stream = stream
        self.slot = slot
        self.sampler = sampler
        self.pending: list[int] = list(req.prompt_tokens[keep:])  # prompt left to decode
        self.cached = keep
        self.next_token: int | None = None  # sampled, not yet decoded
        self.n_gen = 0
        self.detok = Utf8Stream()
        self.stops = StopMatcher(req.stop)
        self.t_submit = 0.0
        self.t_sched = 0.0
        self.t_first = 0.0


class Engine:
    def __init__(self, cfg: EngineConfig, *, turns: CpuTurns | None = None) -> None:
        self.cfg = cfg
        self._turns = turns  # CPU turn-taking with the encoder (None: none)
        self.stats = EngineStats()
        self.state = "starting"  # starting | loading | ready | failed | stopped
        self.error: str | None = None
        self.model: LlamaModel | None = None
        self.backend = ""
        self._inbox: queue.SimpleQueue[tuple[Stream, float] | None] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._loaded = threading.Event()
        self._stopping = False

    # --- life cycle (event loop side) ---------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name="engine", daemon=True)
        self._thread.start()

    def wait_loaded(self, timeout: float | None = None) -> bool:
        return self._loaded.wait(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping = True
        self._inbox.put(None)
        if self._thread is not None:
            self._thread.join(timeout)
        self.state = "stopped"

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    # --- requests (event loop side) -----------------------------------------------------
    def submit(self, request: GenerationRequest) -> Stream:
        stream = Stream(request)
        self._inbox.put((stream, time.monotonic()))
        return stream

    # --- engine thread ------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self.state = "loading"
            model = LlamaModel(self.cfg.model_path, n_gpu_layers=self.cfg.n_gpu_layers,
                               split_mode=self.cfg.split_mode, main_gpu=self.cfg.main_gpu)
            self.model = model
            n_seq = self.cfg.parallel
            ctx = LlamaContext(model, ContextConfig(
                n_ctx=self.cfg.ctx_size * n_seq, n_seq_max=n_seq,
                n_batch=self.cfg.batch_size, n_threads=self.cfg.n_threads,
                # One KV stream per sequence: a sequence's logits do not depend on what
                # else is in the batch (a unified cache changes them by up to ~1 logit),
                # so batched greedy output equals the same request run alone.
                kv_unified=False,
            ))
            self.backend = self._describe_backend(model)
            self._warmup(ctx)
        except Exception as exc:  # reported through /ready, never raised into the loop
            self.error = str(exc) if isinstance(exc, ModelError) else f"{type(exc).__name__}: {exc}"
            self.state = "failed"
            log.error("engine failed to start: %s", self.error)
            self._loaded.set()
            return
        self.stats.kv_cells_total = ctx.n_ctx
        self.state = "ready"
        self._loaded.set()
        log.info("engine ready: %s", self.backend)
        try:
            self._loop_steps(model, ctx)
        except Exception:
            log.exception("engine thread crashed")
            self.state = "failed"
            self.error = "engine thread crashed"
        finally:
            ctx.close()
            model.close()

    def _describe_backend(self, model: LlamaModel) -> str:
        gpu = supports_gpu_offload()
        layers = 0 if not gpu else (model.n_layer if self.cfg.n_gpu_layers < 0
                                    else min(self.cfg.n_gpu_layers, model.n_layer))
        if self.cfg.n_gpu_layers != 0 and not gpu:
            raise ModelError(
                f"--n-gpu-layers {self.cfg.n_gpu_layers} was requested but this llama.cpp "
                f"build has no GPU backend (CPU only); rebuild it with native/build.sh "
                f"cuda|metal or set n_gpu_layers = 0"
            )
        kind = "gpu" if layers else "cpu"
        split = (f" (split mode {self.cfg.split_mode}, main GPU {self.cfg.main_gpu})"
                 if layers else "")
        return (f"{kind} backend, {layers}/{model.n_layer} layers offloaded{split}, "
                f"{self.cfg.n_threads} threads; {system_info()}")

    def _warmup(self, ctx: LlamaContext) -> None:
        batch = Batch(1)
        batch.add(ctx.model.bos if ctx.model.bos >= 0 else 0, 0, 0, True)
        rc = ctx.decode(batch)
        if rc != 0:
            raise ModelError(f"the first llama_decode failed (code {rc})")
        ctx.seq_rm(0)

    def _loop_steps(self, model: LlamaModel, ctx: LlamaContext) -> None:
        cfg = self.cfg
        slots = [Slot(seq_id=i) for i in range(cfg.parallel)]
        waiting: deque[tuple[Stream, float]] = deque()
        running: list[_Seq] = []
        batch = Batch(cfg.batch_size)
        step = 0
        while True:
            try:
                if not self._step(model, ctx, slots, waiting, running, batch, step):
                    return
            except Exception:
                # Never leave a client hanging: fail what was in flight, start afresh.
                log.exception("engine step failed; failing %d running and %d waiting "
                              "requests", len(running), len(waiting))
                self._abort_all(running, waiting, "error", "internal engine error")
                running.clear()
                waiting.clear()
                ctx.clear_memory()
                for slot in slots:
                    slot.tokens, slot.busy = [], False
            # Gauges read by other threads, refreshed once per step whatever happened.
            self.stats.running = len(running)
            self.stats.waiting = len(waiting)
            step += 1

    def _step(self, model: LlamaModel, ctx: LlamaContext, slots: list[Slot],
              waiting: deque[tuple[Stream, float]], running: list[_Seq], batch: Batch,
              step: int) -> bool:
        """One scheduling step; False once the engine is told to stop."""
        cfg = self.cfg
        # 1. Take new requests; block only when there is nothing to do.
        block = not running and not waiting
        while True:
            try:
                item = self._inbox.get(block=block)
            except queue.Empty:
                break
            block = False
            if item is None:
                if self._stopping:
                    self._abort_all(running, waiting, "cancelled", "the engine is stopping")
                    return False
                continue
            waiting.append(item)
        events: dict[Stream, list[Event]] = {}

        # 2. Drop cancelled sequences (within one step of the client leaving).
        for seq in [s for s in running if s.stream.cancelled]:
            self._finish(seq, "cancelled", events, running)
        if waiting and any(s.cancelled for s, _ in waiting):
            kept = [(s, t) for s, t in waiting if not s.cancelled]
            waiting.clear()
            waiting.extend(kept)

        # 3. Admit waiting requests into free slots (prefix reuse decided here).
        now = time.monotonic()
        while waiting:
            stream, t_submit = waiting[0]
            placement = place(slots, stream.request.prompt_tokens,
                              min_copy=cfg.prefix_reuse_min, can_copy=True,
                              reuse=cfg.prefix_reuse_min > 0)
            if placement is None:
                break
            waiting.popleft()
            slot, keep = placement.slot, placement.keep
            park = placement.park_to
            if park is not None:
                # Save the slot's cache in an idle one before it is overwritten.
                copied = ctx.copy_seq(slot.seq_id, park.seq_id)
                park.tokens, park.used = (list(slot.tokens), slot.used) if copied else ([], 0)
            if placement.copy_from is not None and not ctx.copy_seq(
                    placement.copy_from.seq_id, slot.seq_id):
                keep = 0  # (the copy failed: the prompt is decoded afresh)
            if not ctx.seq_rm(slot.seq_id, keep, -1):
                ctx.seq_rm(slot.seq_id)  # e.g. sliding-window caches: start afresh
                keep = 0
            slot.tokens = list(stream.request.prompt_tokens[:keep])
            slot.busy = True
            self.stats.admitted += 1
            slot.used = self.stats.admitted
            seed = self._seed(stream.request)
            seq = _Seq(stream, slot, SamplerChain(model, stream.request.sampling, seed), keep)
            seq.t_submit = t_submit
            seq.t_sched = now
            self.stats.reused_tokens += keep
            running.append(seq)

        # 4. Build the batch: one token per decoding sequence and prefill chunks (the
        # budget goes to waiting prompts in admission order), laid out in ascending seq
        # id order. With one KV stream per sequence llama.cpp cuts a batch into ubatches
        # of consecutive seq ids in batch order, one graph computation each: ascending
        # order over slots packed from 0 (see slots.place) makes that one ubatch for the
        # decoding sequences instead of up to one per sequence.
        batch.clear()
        rows: list[tuple[_Seq, int]] = []
        budget = cfg.batch_size - sum(1 for seq in running if seq.next_token is not None)
        chunks: dict[_Seq, list[int]] = {}
        for seq in running:
            if budget <= 0:
                break
            if seq.pending:
                chunks[seq] = seq.pending[:budget]
                del seq.pending[:budget]
                budget -= len(chunks[seq])
        for seq in sorted(running, key=_seq_id):
            if seq.next_token is not None:
                i = batch.add(seq.next_token, len(seq.slot.tokens), seq.slot.seq_id, True)
                seq.slot.tokens.append(seq.next_token)
                seq.next_token = None
                rows.append((seq, i))
            elif seq in chunks:
                chunk, last = chunks[seq], not seq.pending
                i = batch.add_span(chunk, len(seq.slot.tokens), seq.slot.seq_id, last)
                seq.slot.tokens.extend(chunk)
                if last:
                    rows.append((seq, i))
        if batch.n == 0:
            self._dispatch(events)
            return True

        # 5. Decode once for everybody.
        with engine_turn(self._turns):
            t_decode = time.monotonic()
            rc = ctx.decode(batch)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("step %d: %d tokens, %d sequences, %d sampled, decode %.1f ms",
                      step, batch.n, len(running), len(rows),
                      (time.monotonic() - t_decode) * 1e3)
        self.stats.steps += 1
        self.stats.decoded_tokens += batch.n
        self.stats.last_batch_size = batch.n
        self.stats.batch_sizes.append(batch.n)
        self.stats.count_batch(batch.n)
        if rc != 0:
            log.error("llama_decode failed with code %d for a batch of %d", rc, batch.n)
            for seq in list(running):
                ctx.seq_rm(seq.slot.seq_id)
                seq.slot.tokens = []
                self._finish(seq, "error", events, running,
                             error=f"llama_decode failed (code {rc})")
            self._dispatch(events)
            return True

        # 6. Sample each sequence that produced logits; detokenise; check stops.
        t_now = time.monotonic()
        for seq, row in rows:
            token = seq.sampler.sample(ctx, row)
            if seq.n_gen == 0:
                seq.t_first = t_now
            seq.n_gen += 1
            self.stats.generated_tokens += 1
            if model.is_eog(token) and not seq.stream.request.ignore_eos:
                self._finish(seq, "stop", events, running)
                continue
            res = seq.stops.push(seq.detok.push(model.piece(token)))
            if res.stopped:
                self._finish(seq, "stop", events, running, text=res.text)
                continue
            seq.next_token = token
            if (seq.n_gen >= seq.stream.request.max_tokens
                    or len(seq.slot.tokens) >= cfg.ctx_size):
                self._finish(seq, "length", events, running, text=res.text)
            elif res.text:
                events.setdefault(seq.stream, []).append(TextDelta(res.text, seq.n_gen))
        self.stats.kv_cells_used = sum(len(s.tokens) for s in slots)
        self._dispatch(events)
        return True

    def _seed(self, request: GenerationRequest) -> int:
        if request.sampling.seed is not None:
            return request.sampling.seed
        if self.cfg.default_seed >= 0:
            return self.cfg.default_seed
        return random.getrandbits(32)

    def _finish(self, seq: _Seq, reason: FinishReason, events: dict[Stream, list[Event]],
                running: list[_Seq], *, text: str = "", error: str | None = None) -> None:
        if reason == "length":
            # Release what was held back for a possible stop string: it was not one.
            text += seq.stops.push(seq.detok.flush()).text + seq.stops.flush()
        seq.next_token = None
        seq.slot.busy = False
        seq.sampler.close()
        running.remove(seq)
        req = seq.stream.request
        t_first = seq.t_first or time.monotonic()
        events.setdefault(seq.stream, []).append(Finished(
            reason=reason, text=text, prompt_tokens=len(req.prompt_tokens),
            completion_tokens=seq.n_gen, cached_tokens=seq.cached,
            queue_seconds=max(seq.t_sched - seq.t_submit, 0.0),
            prefill_seconds=max(t_first - seq.t_sched, 0.0), error=error,
        ))

    def _abort_all(self, running: list[_Seq], waiting: deque[tuple[Stream, float]],
                   reason: FinishReason, error: str) -> None:
        events: dict[Stream, list[Event]] = {}
        for seq in list(running):
            self._finish(seq, reason, events, running, error=error)
        for stream, _ in waiting:
            events[stream] = [Finished(reason, "", len(stream.request.prompt_tokens), 0, 0,
                                       0.0, 0.0, error)]
        self._dispatch(events)

    def _dispatch(self, events: dict[Stream, list[Event]]) -> None:
        if not events or self._loop is None:
            return
        items = list(events.items())
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is listening
            self._loop.call_soon_threadsafe(_deliver_all, items)


def _seq_id(seq: _Seq) -> int:
    return seq.slot.seq_id


def _deliver_all(items: list[tuple[Stream, list[Event]]]) -> None:
    for stream, events in items:
        stream._deliver(events)
