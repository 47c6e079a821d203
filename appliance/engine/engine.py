"""The engine: one thread owns the llama.cpp model and context and runs continuous batching.

Each step builds one ``llama_batch`` holding the next token of every running sequence
plus chunks of waiting prompts (chunked prefill), calls ``llama_decode`` once, and samples
every sequence that produced logits with its own sampler: ``draw.Draw`` for plain sampling
(a temperature, ``top_p``, ``min_p``: the same distribution as llama.cpp's chain, drawn in
numpy, four times faster), else its own llama.cpp sampler chain. New requests
join at the next step; finished or cancelled ones leave and free their slot. A slot keeps
its sequence's KV cells afterwards, so a later prompt with the same prefix reuses them.

What runs in a step is decided by ``scheduler.Scheduler`` (plain Python); this module
makes the native calls around it: the decode, the sampling, and the model's life cycle.
A request with a grammar (structured outputs, forced tool calls) samples through
``grammar.ConstrainedSampler``; each distinct grammar is parsed once, when the request is
taken from the inbox (one llama.cpp refuses fails that request alone), and cloned per
sequence.

The event loop talks to the thread through ``submit`` (thread-safe inbox) and receives a
whole step's events in one ``call_soon_threadsafe``. When a step's text goes to a consumer
that checks it on side work (``GenerationRequest.checked``: the output rail), the next
decode starts once the loop has handed that text on (or after ``cpu_turns.SETTLE_S``), so
the checks it sets off run before the step, not beside it (see ``cpu_turns``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import queue
import random
import threading
import time

from appliance.engine import draw
from appliance.engine.cpu_turns import CpuTurns, Settle, engine_turn
from appliance.engine.engine_config import EngineConfig, EngineStats
from appliance.engine.grammar import GrammarCache, GrammarRejected
from appliance.engine.logprobs import LogprobSampler
from appliance.engine.native import (
    Batch,
    ContextConfig,
    LlamaContext,
    LlamaModel,
    SamplerChain,
    supports_gpu_offload,
    system_info,
)
from appliance.engine.scheduler import Events, Row, Sampler, Scheduler
from appliance.engine.stream import Stream
from appliance.engine.types import Event, Finished, GenerationRequest, TextDelta, TokenLogprob
from appliance.errors import ModelError

log = logging.getLogger("appliance.engine")


class Engine:
    def __init__(self, cfg: EngineConfig, *, turns: CpuTurns | None = None) -> None:
        self.cfg = cfg
        self._turns = turns  # CPU turn-taking with the encoder (None: none)
        self.stats = EngineStats()
        self.state = "starting"  # starting | loading | ready | failed | stopped
        self.error: str | None = None
        self.model: LlamaModel | None = None
        self.backend = ""
        self._inbox: queue.SimpleQueue[Stream | None] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._logprobs: LogprobSampler | None = None  # engine thread, made when first needed
        # Set by the loop once the consumers of the last step's checked text have run (and
        # queued their checks); engine thread only.
        self._settle: Settle | None = None

    # --- life cycle (event loop side) ---------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name="engine", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping = True
        self._inbox.put(None)
        if self._thread is not None:
            self._thread.join(timeout)
        self.state = "stopped"

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def remote(self) -> bool:
        return False  # the prompt never leaves the box: prefill may start before the rail

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    # --- requests (event loop side) -----------------------------------------------------
    def submit(self, request: GenerationRequest) -> Stream:
        stream = Stream(request)
        self._inbox.put(stream)
        return stream

    def submit_n(self, request: GenerationRequest, n: int) -> list[Stream]:
        """``n`` sequences of one prompt, started together: the prompt is decoded once and
        its cache copied to the others. Each has its own seed: the request's (or the
        server's default) plus 0, 1, ...; random ones when neither is set."""
        if n == 1:
            return [self.submit(request)]
        if not 1 <= n <= self.cfg.parallel:
            raise ValueError(f"n={n} sequences need as many slots (there are "
                             f"{self.cfg.parallel})")
        base = request.sampling.seed
        if base is None and self.cfg.default_seed >= 0:
            base = self.cfg.default_seed
        streams = [Stream(dataclasses.replace(request, sampling=dataclasses.replace(
            request.sampling, seed=None if base is None else (base + i) & 0xFFFFFFFF)))
            for i in range(1, n)]
        leader = Stream(dataclasses.replace(request, sampling=dataclasses.replace(
            request.sampling, seed=base)), followers=tuple(streams))
        self._inbox.put(leader)
        return [leader, *streams]

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
            return
        self.stats.kv_cells_total = ctx.n_ctx
        self.state = "ready"
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
        grammars = GrammarCache(model)

        def open_sampler(request: GenerationRequest) -> Sampler:
            if request.grammar is None and draw.handles(request.sampling):
                return draw.Draw(model.n_vocab, request.sampling, self._seed(request))
            chain = SamplerChain(model, request.sampling, self._seed(request))
            if request.grammar is None:
                return chain
            return grammars.constrain(chain, request.grammar)

        sched = Scheduler(Batch(cfg.batch_size), cfg.parallel, cache=ctx,
                          open_sampler=open_sampler, prefix_reuse_min=cfg.prefix_reuse_min)
        try:
            self._run_steps(model, ctx, sched, grammars)
        finally:
            grammars.close()

    def _run_steps(self, model: LlamaModel, ctx: LlamaContext, sched: Scheduler,
                   grammars: GrammarCache) -> None:
        while True:
            try:
                if not self._step(model, ctx, sched, grammars):
                    return
            except Exception:
                # Never leave a client hanging: fail what was in flight, start afresh.
                log.exception("engine step failed; failing %d running and %d waiting "
                              "requests", len(sched.running), len(sched.waiting))
                self._dispatch(sched.abort_all("error", "internal engine error"))
                sched.reset()
                ctx.clear_memory()
            # Gauges read by other threads, refreshed once per step whatever happened.
            self.stats.running = len(sched.running)
            self.stats.waiting = len(sched.waiting)
            self.stats.prefilled_tokens = sched.prefilled
            sched.step += 1

    def _step(self, model: LlamaModel, ctx: LlamaContext, sched: Scheduler,
              grammars: GrammarCache) -> bool:
        """One scheduling step; False once the engine is told to stop."""
        events: Events = {}
        if not self._take_inbox(sched, grammars, events):
            self._dispatch(events)
            self._dispatch(sched.abort_all("cancelled", "the engine is stopping"))
            return False
        sched.drop_cancelled(events)  # within one step of the client leaving
        for seq in sched.admit():
            self.stats.reused_tokens += seq.cached
        rows = sched.build_batch()
        if sched.batch.n and self._decode(ctx, sched, len(rows), events):
            self._sample(model, ctx, sched, rows, events)
        self._dispatch(events)
        return True

    def _take_inbox(self, sched: Scheduler, grammars: GrammarCache, events: Events) -> bool:
        """Queue new requests, blocking only when there is nothing else to do; False when
        the engine is told to stop. A request whose grammar llama.cpp cannot parse ends
        here with an error (parsed once, so admitting it later only clones)."""
        block = sched.idle
        while True:
            try:
                stream = self._inbox.get(block=block)
            except queue.Empty:
                return True
            block = False
            if stream is None:
                if self._stopping:
                    return False
                continue
            if stream.request.grammar is not None and not self._parse(grammars, stream,
                                                                      events):
                continue
            sched.add(stream)

    def _parse(self, grammars: GrammarCache, stream: Stream, events: Events) -> bool:
        assert stream.request.grammar is not None
        try:
            grammars.prepare(stream.request.grammar)
        except GrammarRejected as exc:
            log.error("grammar rejected: %s", exc)
            events[stream] = [Finished(
                reason="error", text="", prompt_tokens=len(stream.request.prompt_tokens),
                completion_tokens=0, cached_tokens=0, prefill_seconds=0.0, error=str(exc))]
            return False
        self.stats.grammars_parsed = grammars.parses
        return True

    def _decode(self, ctx: LlamaContext, sched: Scheduler, n_rows: int,
                events: Events) -> bool:
        """Decode the batch once for everybody; False (running sequences failed) if
        llama.cpp refused it."""
        batch = sched.batch
        if self._settle is not None:
            self._settle.wait()
            self._settle = None
        with engine_turn(self._turns):
            t_decode = time.monotonic()
            rc = ctx.decode(batch)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("step %d: %d tokens, %d sequences, %d sampled, decode %.1f ms",
                      sched.step, batch.n, len(sched.running), n_rows,
                      (time.monotonic() - t_decode) * 1e3)
        self.stats.steps += 1
        self.stats.batch_sizes.append(batch.n)
        self.stats.count_batch(batch.n)
        if rc == 0:
            return True
        log.error("llama_decode failed with code %d for a batch of %d", rc, batch.n)
        sched.fail_running(f"llama_decode failed (code {rc})", events)
        return False

    def _sample(self, model: LlamaModel, ctx: LlamaContext, sched: Scheduler,
                rows: list[Row], events: Events) -> None:
        """Sample each row with logits; detokenise; check stops and limits."""
        ctx_size = self.cfg.ctx_size
        t_now = time.monotonic()
        sampled = sched.fork(rows)
        self.stats.reused_tokens += sum(seq.cached for seq, _ in sampled[len(rows):])
        for seq, row in sampled:
            request = seq.stream.request
            logprob: TokenLogprob | None = None
            if seq.trail is None:
                token = seq.sampler.sample(ctx, row)
            else:
                if self._logprobs is None:
                    self._logprobs = LogprobSampler(model)
                if isinstance(seq.sampler, draw.Draw):
                    token, logprob = self._logprobs.drawn(seq.sampler, ctx, row,
                                                          request.logprobs or 0)
                else:  # (the parser refuses logprobs with a grammar: a plain chain)
                    assert isinstance(seq.sampler, SamplerChain)
                    token, logprob = self._logprobs.sample(seq.sampler, ctx, row,
                                                           request.logprobs or 0)
            if seq.n_gen == 0:
                seq.t_first = t_now
            seq.n_gen += 1
            self.stats.generated_tokens += 1
            if model.is_eog(token) and not request.ignore_eos:
                sched.finish(seq, "stop", events)
                continue
            if seq.trail is not None and logprob is not None:
                seq.trail.add(logprob)
            res = seq.stops.push(seq.detok.push(model.piece(token)))
            if res.stopped:
                sched.finish(seq, "stop", events, text=res.text, at_stop_string=True)
                continue
            seq.next_token = token
            if seq.n_gen >= request.max_tokens or len(seq.slot.tokens) >= ctx_size:
                sched.finish(seq, "length", events, text=res.text)
            elif res.text:
                events.setdefault(seq.stream, []).append(TextDelta(
                    res.text, seq.n_gen, seq.trail.release(res.text) if seq.trail else ()))
        self.stats.kv_cells_used = sum(len(s.tokens) for s in sched.slots)

    def _seed(self, request: GenerationRequest) -> int:
        if request.sampling.seed is not None:
            return request.sampling.seed
        if self.cfg.default_seed >= 0:
            return self.cfg.default_seed
        return random.getrandbits(32)

    def _dispatch(self, events: Events) -> None:
        if not events or self._loop is None:
            return
        items = list(events.items())
        settle = None
        if self._turns is not None and any(s.request.checked for s, _ in items):
            settle = self._settle = Settle()
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is listening
            self._loop.call_soon_threadsafe(_deliver_all, self._loop, items, settle)


def _deliver_all(loop: asyncio.AbstractEventLoop, items: list[tuple[Stream, list[Event]]],
                 settle: Settle | None) -> None:
    for stream, events in items:
        stream._deliver(events)
    if settle is not None:
        settle.after_delivery(loop)
