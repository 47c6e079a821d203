"""The scheduler: which requests run, and what goes into each step's batch.

Plain Python, after vLLM's split of ``schedule()`` from ``update_from_output()``: this
module decides what to admit, what goes into the batch and how a sequence ends; the engine
thread makes the native calls (``llama_decode``, sampling) between. What it needs of
llama.cpp is passed in: the batch buffer (numpy arrays, filled here), a ``SeqCache``
(``LlamaContext``: copy or trim a sequence's KV cells) and a factory of sampler chains,
so tests drive it with fakes and no model. One step, as the engine runs it:

1. ``add`` each request taken from the engine's inbox;
2. ``drop_cancelled``: sequences whose client left are finished, waiting ones forgotten;
3. ``admit`` waiting requests into free slots, oldest first (prefix reuse, see ``slots``);
4. ``build_batch``: the next token of every decoding sequence and chunks of prompts;
5. the engine decodes the batch (``fail_running`` if llama.cpp refuses it);
6. ``fork``: the n sequences of one prompt whose prefill just ended get its cache;
7. the engine samples every row with logits and ``finish``-es the sequences that end.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from appliance.engine.detok import LogprobTrail, StopMatcher, Utf8Stream
from appliance.engine.slots import Placement, Slot, place
from appliance.engine.stream import Stream
from appliance.engine.types import Event, Finished, FinishReason, GenerationRequest

if TYPE_CHECKING:
    from appliance.engine.native import Batch, LlamaContext

# A step's events per stream, handed to the event loop in one call.
Events = dict[Stream, list[Event]]
# A sequence and the batch row whose logits it samples from (a tuple, not a dataclass:
# one is built per sampled token).
Row = tuple["Seq", int]


class SeqCache(Protocol):
    """The KV-cache operations admission needs (``LlamaContext`` provides them)."""

    def copy_seq(self, src: int, dst: int) -> bool: ...

    def seq_rm(self, seq: int, p0: int = -1, p1: int = -1) -> bool: ...


class Sampler(Protocol):
    """One sequence's sampler (``draw.Draw``, a ``SamplerChain``, or one constrained by a
    grammar)."""

    def sample(self, ctx: LlamaContext, index: int) -> int: ...

    def close(self) -> None: ...


class Seq:
    """One running sequence: its slot, what is left of its prompt, its output so far."""

    __slots__ = (
        "cached", "detok", "followers", "n_gen", "next_token", "pending", "sampler", "slot",
        "stops", "stream", "t_first", "t_sched", "trail",
    )

    def __init__(self, stream: Stream, slot: Slot, sampler: Sampler, keep: int,
                 t_sched: float) -> None:
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
        self.t_sched = t_sched  # when it got its slot
        self.t_first = 0.0  # when its first token was sampled
        self.followers: list[Seq] = []  # n > 1: the others, until ``Scheduler.fork``
        self.trail = LogprobTrail() if req.logprobs is not None else None


class Scheduler:
    """The engine loop's state (slots, waiting and running sequences, the batch buffer,
    the step count) and the scheduling phases over it. Engine thread only."""

    def __init__(self, batch: Batch, n_slots: int, *, cache: SeqCache,
                 open_sampler: Callable[[GenerationRequest], Sampler],
                 prefix_reuse_min: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.slots = [Slot(seq_id=i) for i in range(n_slots)]
        self.waiting: deque[Stream] = deque()
        self.running: list[Seq] = []
        self.batch = batch
        self.step = 0
        self._cache = cache
        self._open_sampler = open_sampler
        self._reuse_min = prefix_reuse_min  # 0: prefix reuse off
        self._clock = clock
        self._admitted = 0  # sequences given a slot so far: the clock of Slot.used
        self.prefilled = 0  # prompt tokens put into batches (not reused) so far

    @property
    def idle(self) -> bool:
        return not self.running and not self.waiting

    def add(self, stream: Stream) -> None:
        self.waiting.append(stream)

    def drop_cancelled(self, events: Events) -> None:
        """Finish the running sequences whose client left; forget such waiting requests."""
        for seq in [s for s in self.running if s.stream.cancelled]:
            self.finish(seq, "cancelled", events)
        if any(s.cancelled for s in self.waiting):
            kept = [s for s in self.waiting if not s.cancelled]
            self.waiting.clear()
            self.waiting.extend(kept)

    def admit(self) -> list[Seq]:
        """Give waiting requests free slots, in arrival order, until none is free."""
        admitted: list[Seq] = []
        now = self._clock()
        reuse = self._reuse_min > 0
        while self.waiting:
            stream = self.waiting[0]
            prompt = stream.request.prompt_tokens
            if len(stream.followers) >= sum(1 for s in self.slots if not s.busy):
                break  # the n sequences of a prompt start together
            placement = place(self.slots, prompt, min_copy=self._reuse_min, can_copy=True,
                              reuse=reuse)
            if placement is None:
                break
            self.waiting.popleft()
            keep = self._prepare_cache(placement)
            slot = placement.slot
            slot.tokens = list(prompt[:keep])
            slot.busy = True
            self._admitted += 1
            slot.used = self._admitted
            seq = Seq(stream, slot, self._open_sampler(stream.request), keep, now)
            self.running.append(seq)
            admitted.append(seq)
            seq.followers = [self._follower(f, len(prompt), now) for f in stream.followers]
        return admitted

    def _follower(self, stream: Stream, n_prompt: int, now: float) -> Seq:
        """A sequence that waits, in the lowest free slot, for its leader's prompt cache:
        nothing of its own to decode (its slot keeps its old cells until the fork)."""
        slot = min((s for s in self.slots if not s.busy), key=_seq_id_of_slot)
        slot.busy = True
        self._admitted += 1
        slot.used = self._admitted
        seq = Seq(stream, slot, self._open_sampler(stream.request), n_prompt, now)
        self.running.append(seq)
        return seq

    def fork(self, rows: list[Row]) -> list[Row]:
        """``rows``, then the followers of each leader whose prompt was just decoded, each
        sampling from its leader's row: the leader's cells are copied into their slots
        (prefill once, copy n-1 times). A follower whose copy failed decodes the prompt
        itself instead. The rows added are exactly ``result[len(rows):]``."""
        if not any(seq.followers for seq, _ in rows):
            return rows
        out = list(rows)
        for seq, i in rows:
            for follower in seq.followers:
                if follower not in self.running:
                    continue  # cancelled meanwhile
                if self._cache.copy_seq(seq.slot.seq_id, follower.slot.seq_id):
                    follower.slot.tokens = list(seq.slot.tokens)
                    out.append((follower, i))
                else:
                    self._cache.seq_rm(follower.slot.seq_id)
                    follower.slot.tokens, follower.cached = [], 0
                    follower.pending = list(follower.stream.request.prompt_tokens)
            seq.followers = []
        return out

    def _prepare_cache(self, placement: Placement) -> int:
        """Leave the slot's KV cells holding the prompt's first ``keep`` tokens; returns
        the ``keep`` reached (0 where a copy or a trim failed)."""
        slot, keep, park = placement.slot, placement.keep, placement.park_to
        if park is not None:
            # Save the slot's cache in an idle one before it is overwritten.
            copied = self._cache.copy_seq(slot.seq_id, park.seq_id)
            park.tokens, park.used = (list(slot.tokens), slot.used) if copied else ([], 0)
        if placement.copy_from is not None and not self._cache.copy_seq(
                placement.copy_from.seq_id, slot.seq_id):
            keep = 0  # the prompt is decoded afresh
        if not self._cache.seq_rm(slot.seq_id, keep, -1):
            self._cache.seq_rm(slot.seq_id)  # e.g. sliding-window caches: start afresh
            keep = 0
        return keep

    def build_batch(self) -> list[Row]:
        """Fill ``batch`` for this step; returns the rows to sample, in batch order.

        One token per decoding sequence, then what the batch has left goes to prompts in
        admission order (chunked prefill). Rows are laid out in ascending seq id order:
        with one KV stream per sequence llama.cpp cuts a batch into ubatches of consecutive
        seq ids in batch order, one graph computation each, so ascending order over slots
        packed from 0 (see ``slots.place``) makes that one ubatch for the decoding
        sequences instead of up to one per sequence.
        """
        batch = self.batch
        batch.clear()
        decoding = sum(1 for seq in self.running if seq.next_token is not None)
        chunks = prefill_chunks(self.running, batch.capacity - decoding)
        rows: list[Row] = []
        for seq in sorted(self.running, key=_seq_id):
            slot = seq.slot
            if seq.next_token is not None:
                i = batch.add(seq.next_token, len(slot.tokens), slot.seq_id, True)
                slot.tokens.append(seq.next_token)
                seq.next_token = None
                rows.append((seq, i))
            elif seq in chunks:
                chunk, last = chunks[seq], not seq.pending
                i = batch.add_span(chunk, len(slot.tokens), slot.seq_id, last)
                slot.tokens.extend(chunk)
                self.prefilled += len(chunk)
                if last:
                    rows.append((seq, i))
        return rows

    def finish(self, seq: Seq, reason: FinishReason, events: Events, *, text: str = "",
               error: str | None = None, at_stop_string: bool = False) -> None:
        """Take ``seq`` out of the running set and queue its ``Finished`` event (nothing
        if it has finished already: a follower ends with a leader that ends before it)."""
        if seq not in self.running:
            return
        if reason in ("stop", "length") and not at_stop_string:
            # The end of text or the length limit: what was held back for a possible stop
            # string was not one; the bytes of an unfinished character are dropped.
            seq.detok.cut()
            text += seq.stops.flush()
        logprobs = () if seq.trail is None else (
            seq.trail.release(text) if at_stop_string else seq.trail.rest())
        for follower in seq.followers:  # never forked: they end with their leader
            self.finish(follower, reason, events, error=error)
        seq.followers = []
        seq.next_token = None
        seq.slot.busy = False
        seq.sampler.close()
        self.running.remove(seq)
        t_first = seq.t_first or self._clock()  # no token yet: prefill so far
        events.setdefault(seq.stream, []).append(Finished(
            reason=reason, text=text, prompt_tokens=len(seq.stream.request.prompt_tokens),
            completion_tokens=seq.n_gen, cached_tokens=seq.cached,
            prefill_seconds=max(t_first - seq.t_sched, 0.0), error=error, logprobs=logprobs))

    def fail_running(self, error: str, events: Events) -> None:
        """Finish every running sequence with an error, its KV cells dropped."""
        for seq in list(self.running):
            self._cache.seq_rm(seq.slot.seq_id)
            seq.slot.tokens = []
            self.finish(seq, "error", events, error=error)

    def abort_all(self, reason: FinishReason, error: str) -> Events:
        """Finish everything running or waiting (the engine stops, or a step failed)."""
        events: Events = {}
        for seq in list(self.running):
            self.finish(seq, reason, events, error=error)
        for stream in [s for leader in self.waiting for s in (leader, *leader.followers)]:
            events[stream] = [Finished(
                reason=reason, text="", prompt_tokens=len(stream.request.prompt_tokens),
                completion_tokens=0, cached_tokens=0, prefill_seconds=0.0, error=error)]
        return events

    def reset(self) -> None:
        """Start afresh after a failed step (the engine also clears the KV cache)."""
        self.running.clear()
        self.waiting.clear()
        for slot in self.slots:
            slot.tokens, slot.busy = [], False


def prefill_chunks(running: list[Seq], budget: int) -> dict[Seq, list[int]]:
    """Split ``budget`` batch tokens among prompts still to decode, in admission order;
    each chunk is taken off its sequence's ``pending``."""
    chunks: dict[Seq, list[int]] = {}
    for seq in running:
        if budget <= 0:
            break
        if seq.pending:
            chunks[seq] = seq.pending[:budget]
            del seq.pending[:budget]
            budget -= len(chunks[seq])
    return chunks


def _seq_id(seq: Seq) -> int:
    return seq.slot.seq_id


def _seq_id_of_slot(slot: Slot) -> int:
    return slot.seq_id
