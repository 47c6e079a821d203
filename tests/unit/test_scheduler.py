"""The scheduler without a model: admission, cancellation, the batch budget and layout.

The KV cache and the samplers are fakes that record what was asked of them; the batch is
the real reusable ``llama_batch`` buffer (numpy arrays, no model needed).
"""

from __future__ import annotations

from appliance.engine.native import Batch
from appliance.engine.scheduler import Events, Scheduler, Seq, prefill_chunks
from appliance.engine.slots import Slot
from appliance.engine.stream import Stream
from appliance.engine.types import Finished, GenerationRequest


class FakeCache:
    """Records KV operations; a trim of part of a sequence fails when ``trim_ok`` is off."""

    def __init__(self, *, copy_ok: bool = True, trim_ok: bool = True) -> None:
        self.copy_ok, self.trim_ok = copy_ok, trim_ok
        self.calls: list[tuple[str, int, int]] = []

    def copy_seq(self, src: int, dst: int) -> bool:
        self.calls.append(("copy", src, dst))
        return self.copy_ok

    def seq_rm(self, seq: int, p0: int = -1, p1: int = -1) -> bool:
        self.calls.append(("rm", seq, p0))
        return self.trim_ok or p0 == -1


class FakeSampler:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _scheduler(n_slots: int = 2, batch: int = 8, *, reuse_min: int = 0,
               cache: FakeCache | None = None, clock: Clock | None = None) -> Scheduler:
    return Scheduler(Batch(batch), n_slots, cache=cache or FakeCache(),
                     open_sampler=lambda request: FakeSampler(),  # type: ignore[arg-type,return-value]
                     prefix_reuse_min=reuse_min, clock=clock or Clock())


def _stream(prompt: list[int] | range, *, max_tokens: int = 8,
            stop: tuple[str, ...] = ()) -> Stream:
    return Stream(GenerationRequest(prompt_tokens=tuple(prompt), max_tokens=max_tokens,
                                    stop=stop))


def _layout(batch: Batch) -> list[tuple[int, int, int, int]]:
    """(token, position, seq id, logits) for each batch row."""
    n = batch.n
    return list(zip(batch.token[:n].tolist(), batch.pos[:n].tolist(),
                    batch.seq[:n].tolist(), batch.logits[:n].tolist(), strict=True))


def _sampled(rows: list[tuple[Seq, int]], token: int = 7) -> None:
    """What sampling does to a sequence that goes on: its next token waits to be decoded."""
    for seq, _ in rows:
        seq.n_gen += 1
        seq.next_token = token


def test_requests_are_admitted_in_arrival_order_into_the_lowest_free_slots() -> None:
    sched = _scheduler(n_slots=2)
    a, b, c = _stream([1, 2]), _stream([3, 4]), _stream([5, 6])
    for s in (a, b, c):
        sched.add(s)
    admitted = sched.admit()
    assert [seq.stream for seq in admitted] == [a, b]
    assert [seq.slot.seq_id for seq in admitted] == [0, 1]
    assert list(sched.waiting) == [c]  # no slot left: it waits, first in line
    assert all(slot.busy for slot in sched.slots)
    assert [slot.used for slot in sched.slots] == [1, 2]  # the admission clock

    sched.finish(admitted[0], "stop", {})
    assert [seq.stream for seq in sched.admit()] == [c]
    assert admitted[0].sampler.closed  # type: ignore[attr-defined]
    assert sched.slots[0].used == 3 and not sched.waiting


def test_a_new_prompt_is_decoded_whole_in_one_chunk_when_it_fits() -> None:
    sched = _scheduler(batch=8)
    sched.add(_stream([10, 11, 12]))
    (seq,) = sched.admit()
    rows = sched.build_batch()
    assert _layout(sched.batch) == [(10, 0, 0, 0), (11, 1, 0, 0), (12, 2, 0, 1)]
    assert rows == [(seq, 2)]  # logits only for the prompt's last token
    assert sched.slots[0].tokens == [10, 11, 12] and not seq.pending


def test_decode_tokens_come_first_and_prompts_share_the_rest_in_admission_order() -> None:
    sched = _scheduler(n_slots=3, batch=8)
    sched.add(_stream([1, 2]))
    (a,) = sched.admit()
    _sampled(sched.build_batch(), token=9)
    sched.add(_stream(range(20, 30)))  # 10 tokens
    sched.add(_stream([40, 41, 42]))
    b, c = sched.admit()

    rows = sched.build_batch()  # 8 = 1 decode token + 7 of b's prompt; c waits
    assert _layout(sched.batch)[0] == (9, 2, 0, 1)
    assert [seq for seq, _ in rows] == [a]  # b's chunk is not its last: no logits yet
    assert len(b.pending) == 3 and len(c.pending) == 3
    assert sched.batch.n == 8

    _sampled(rows, token=8)
    rows = sched.build_batch()  # 1 decode token, b's last 3, c's 3
    assert [seq for seq, _ in rows] == [a, b, c]
    assert sched.batch.n == 7
    assert [row[1] for row in rows] == [0, 3, 6]  # each prompt's last token
    assert sched.slots[1].tokens == list(range(20, 30))


def test_the_budget_split_on_its_own() -> None:
    sched = _scheduler(n_slots=3)
    for prompt in ([1] * 5, [2] * 5, [3] * 5):
        sched.add(_stream(prompt))
    a, b, c = sched.admit()
    chunks = prefill_chunks(sched.running, 7)
    assert chunks == {a: [1] * 5, b: [2] * 2}
    assert (len(a.pending), len(b.pending), len(c.pending)) == (0, 3, 5)
    assert prefill_chunks(sched.running, 0) == {}


def test_the_batch_is_laid_out_in_ascending_seq_id_order() -> None:
    sched = _scheduler(n_slots=3, batch=16)
    for prompt in ([1, 1], [2, 2], [3, 3]):
        sched.add(_stream(prompt))
    first, _, _ = sched.admit()
    _sampled(sched.build_batch())
    sched.finish(first, "stop", {})
    sched.add(_stream([4, 4]))
    (late,) = sched.admit()  # slot 0 again, but last in the running list
    assert late.slot.seq_id == 0 and sched.running[-1] is late

    rows = sched.build_batch()
    assert [seq.slot.seq_id for seq, _ in rows] == [0, 1, 2]
    assert sched.batch.seq[: sched.batch.n].tolist() == [0, 0, 1, 2]


def test_cancelled_requests_are_dropped_running_with_an_event_waiting_without() -> None:
    sched = _scheduler(n_slots=1)
    running, waiting, kept = _stream([1, 2]), _stream([3, 4]), _stream([5, 6])
    for s in (running, waiting, kept):
        sched.add(s)
    (seq,) = sched.admit()
    running.cancel()
    waiting.cancel()
    events: Events = {}
    sched.drop_cancelled(events)
    assert not sched.running and not sched.slots[0].busy
    assert list(sched.waiting) == [kept]
    assert list(events) == [running]
    (done,) = events[running]
    assert isinstance(done, Finished) and done.reason == "cancelled"
    assert seq.sampler.closed  # type: ignore[attr-defined]
    assert [s.stream for s in sched.admit()] == [kept]


def test_a_shared_prefix_is_kept_and_only_the_rest_is_decoded() -> None:
    cache = FakeCache()
    sched = _scheduler(n_slots=2, batch=64, reuse_min=4, cache=cache)
    system = list(range(100, 120))
    sched.add(_stream([*system, 1]))
    (first,) = sched.admit()
    _sampled(sched.build_batch())
    sched.finish(first, "stop", {})
    cache.calls.clear()

    sched.add(_stream([*system, 2, 3]))
    (seq,) = sched.admit()
    assert seq.slot.seq_id == 0 and seq.cached == len(system)
    assert seq.pending == [2, 3]
    assert cache.calls == [("rm", 0, len(system))]  # cells past the shared prefix go
    assert sched.slots[0].tokens == system


def test_a_failed_copy_or_trim_means_the_prompt_is_decoded_afresh() -> None:
    system = list(range(100, 120))
    for cache in (FakeCache(copy_ok=False), FakeCache(trim_ok=False)):
        sched = _scheduler(n_slots=2, batch=64, reuse_min=4, cache=cache)
        sched.slots[1].tokens = [*system, 9]  # an idle slot holds the prefix
        sched.add(_stream([*system, 1, 2]))
        (seq,) = sched.admit()
        assert seq.slot.seq_id == 0 and seq.cached == 0
        assert len(seq.pending) == len(system) + 2 and sched.slots[0].tokens == []
        if not cache.copy_ok:
            assert cache.calls == [("copy", 1, 0), ("rm", 0, 0)]
        else:
            assert cache.calls == [("copy", 1, 0), ("rm", 0, 20), ("rm", 0, -1)]


def test_a_parked_cache_is_recorded_only_if_the_copy_worked() -> None:
    old = [5] * 12
    for copy_ok in (True, False):
        cache = FakeCache(copy_ok=copy_ok)
        sched = _scheduler(n_slots=2, reuse_min=4, cache=cache)
        sched.slots[0].tokens, sched.slots[0].used = list(old), 3
        sched.add(_stream([9, 9, 9]))
        sched.admit()
        assert cache.calls[0] == ("copy", 0, 1)  # saved before slot 0 is overwritten
        parked = sched.slots[1]
        assert (parked.tokens, parked.used) == ((old, 3) if copy_ok else ([], 0))


def test_length_releases_text_held_back_for_a_stop_string() -> None:
    clock = Clock()
    sched = _scheduler(clock=clock)
    sched.add(_stream([1, 2], stop=("END",)))
    (seq,) = sched.admit()
    assert seq.stops.push("the E").text == "the "
    clock.now += 0.25
    events: Events = {}
    sched.finish(seq, "length", events, text="")
    (done,) = events[seq.stream]
    assert isinstance(done, Finished)
    assert (done.reason, done.text, done.prompt_tokens) == ("length", "E", 2)
    assert done.prefill_seconds == 0.25  # no token yet: the time since it got its slot


def test_a_refused_decode_fails_the_running_and_drops_their_cells() -> None:
    cache = FakeCache()
    sched = _scheduler(n_slots=2, cache=cache)
    sched.add(_stream([1, 2]))
    sched.add(_stream([3, 4]))
    streams = [seq.stream for seq in sched.admit()]
    sched.build_batch()
    cache.calls.clear()
    events: Events = {}
    sched.fail_running("llama_decode failed (code 1)", events)
    assert cache.calls == [("rm", 0, -1), ("rm", 1, -1)]
    assert not sched.running and all(s.tokens == [] and not s.busy for s in sched.slots)
    assert list(events) == streams
    assert all(isinstance(e, Finished) and e.reason == "error" and e.error
               for evs in events.values() for e in evs)


def test_abort_finishes_running_and_waiting_and_reset_starts_afresh() -> None:
    sched = _scheduler(n_slots=1)
    running, waiting = _stream([1, 2]), _stream([3, 4, 5])
    sched.add(running)
    sched.add(waiting)
    sched.admit()
    sched.build_batch()
    events = sched.abort_all("error", "internal engine error")
    assert list(events) == [running, waiting]
    late = events[waiting][0]
    assert isinstance(late, Finished)
    assert (late.reason, late.prompt_tokens) == ("error", 3)
    assert late.error == "internal engine error"
    sched.reset()
    assert sched.idle and sched.slots == [Slot(0, [], busy=False, used=1)]


def _group(prompt: list[int], n: int) -> tuple[Stream, list[Stream]]:
    """The n streams of one prompt, as ``Engine.submit_n`` makes them."""
    request = GenerationRequest(prompt_tokens=tuple(prompt), max_tokens=8)
    followers = tuple(Stream(request) for _ in range(n - 1))
    return Stream(request, followers=followers), list(followers)


def test_n_sequences_start_together_and_fork_after_one_prefill() -> None:
    cache = FakeCache()
    sched = _scheduler(n_slots=4, batch=16, cache=cache)
    sched.add(_stream([9, 9]))
    sched.admit()  # slot 0 busy: three left
    leader, followers = _group([1, 2, 3, 4, 5], 4)
    sched.add(leader)
    assert sched.admit() == []  # four sequences need four free slots
    sched.finish(sched.running[0], "stop", {})
    (seq,) = sched.admit()  # the leader alone counts as admitted (its reuse is its own)
    assert seq.stream is leader
    assert [s.slot.seq_id for s in sched.running] == [0, 1, 2, 3]
    assert [s.stream for s in seq.followers] == followers
    rows = sched.build_batch()
    # Only the leader's prompt is decoded; the followers have nothing of their own.
    assert _layout(sched.batch) == [(t, i, 0, int(i == 4)) for i, t in enumerate([1, 2, 3, 4, 5])]
    assert sched.prefilled == 5  # once
    assert rows == [(seq, 4)]
    forked = sched.fork(rows)
    assert forked[:1] == rows
    assert [(f.stream, row) for f, row in forked[1:]] == [(s, 4) for s in followers]
    assert [c for c in cache.calls if c[0] == "copy"] == [("copy", 0, i) for i in (1, 2, 3)]
    for f, _ in forked[1:]:
        assert f.slot.tokens == [1, 2, 3, 4, 5] and f.cached == 5 and not f.pending
    assert seq.followers == [] and sched.fork(rows) == rows  # once
    _sampled(forked)
    sched.build_batch()
    assert sched.batch.seq[: sched.batch.n].tolist() == [0, 1, 2, 3]
    assert sched.batch.pos[: sched.batch.n].tolist() == [5, 5, 5, 5]


def test_a_follower_whose_copy_failed_decodes_the_prompt_itself() -> None:
    cache = FakeCache(copy_ok=False)
    sched = _scheduler(n_slots=2, batch=16, cache=cache)
    leader, (follower,) = _group([1, 2, 3], 2)
    sched.add(leader)
    (seq,) = sched.admit()
    rows = sched.build_batch()
    assert sched.fork(rows) == rows  # nothing to sample for it yet
    (other,) = [s for s in sched.running if s.stream is follower]
    assert other.pending == [1, 2, 3] and other.cached == 0 and other.slot.tokens == []
    _sampled(rows)
    assert sched.build_batch() == [(seq, 0), (other, 3)]


def test_a_group_ends_together_if_its_leader_ends_before_the_fork() -> None:
    sched = _scheduler(n_slots=3)
    leader, followers = _group([1, 2, 3], 3)
    sched.add(leader)
    sched.admit()
    followers[0].cancel()
    events: Events = {}
    sched.drop_cancelled(events)  # a follower can leave on its own
    assert list(events) == [followers[0]]
    leader.cancel()
    followers[1].cancel()  # (the pipeline cancels them all at once)
    sched.drop_cancelled(events)
    assert set(events) == {followers[0], leader, followers[1]}
    assert all(len(e) == 1 for e in events.values())
    assert not sched.running and not any(s.busy for s in sched.slots)
    eight = _stream([8])
    sched.add(_stream([7]))
    sched.add(eight)
    admitted, (admitted_follower,) = _group([6], 2)
    waiting, late = _group([4, 5], 2)
    sched.add(admitted)
    sched.add(waiting)
    sched.admit()
    sched.finish(sched.running[0], "stop", {})
    sched.admit()  # the first group runs, unforked; the second waits
    assert list(sched.waiting) == [waiting]
    aborted = sched.abort_all("cancelled", "stopping")
    assert set(aborted) == {eight, admitted, admitted_follower, waiting, *late}
    assert all(len(e) == 1 for e in aborted.values())


def test_a_cut_drops_an_unfinished_character_and_releases_a_held_stop_prefix() -> None:
    sched = _scheduler()
    sched.add(_stream([1, 2], stop=("END",)))
    (seq,) = sched.admit()
    assert seq.stops.push(seq.detok.push("日本 E".encode() + "語".encode()[:2])).text == "日本 "
    events: Events = {}
    sched.finish(seq, "length", events)
    (done,) = events[seq.stream]
    assert isinstance(done, Finished) and done.text == "E"  # no U+FFFD, the held "E" out
    sched.add(_stream([1, 2], stop=("END",)))
    (seq,) = sched.admit()
    seq.stops.push("the EN")
    sched.finish(seq, "stop", events)  # the end of text: "EN" was not a stop string
    assert events[seq.stream][0].text == "EN"  # type: ignore[union-attr]
