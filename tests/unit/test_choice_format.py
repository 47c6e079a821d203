"""Choices as OpenAI bodies: indexes, one usage, the two logprobs shapes, CORS headers."""

from __future__ import annotations

import dataclasses

import numpy as np

from appliance.api.requests import parse_chat, parse_completion
from appliance.engine.logprobs import entry, log_normaliser
from appliance.engine.types import GenerationRequest, TokenLogprob, TopLogprob
from appliance.pipeline.choices import total_usage
from appliance.pipeline.job import Chunk, Generation, Job, Usage
from appliance.routing.catalog import Route
from appliance.web.choice_format import ChoicesFormatter, TextOffsets, chat_logprobs, choices_body
from appliance.web.cors import CorsPolicy


def _job(kind: str, n: int, logprobs: int | None, *, stream: bool = False) -> Job:
    if kind == "chat":
        options = parse_chat({"model": "m", "messages": [{"role": "user", "content": "x"}],
                              "n": n, "stream": stream, "stream_options": {
                                  "include_usage": True} if stream else None}).options
    else:
        options = parse_completion({"model": "m", "prompt": "ab", "n": n, "stream": stream,
                                    "stream_options": {"include_usage": True}
                                    if stream else None}).options
    options = dataclasses.replace(options, logprobs=logprobs)
    return Job(id="cmpl-1", created=1, kind=kind,  # type: ignore[arg-type]
               request=GenerationRequest((1, 2), 4), options=options, route=Route("m", True),
               prompt_chars=2)


def _lp(piece: bytes, logprob: float) -> TokenLogprob:
    return TokenLogprob(5, piece, logprob, (TopLogprob(5, piece, logprob),
                                            TopLogprob(6, b"zz", logprob - 1)))


def test_total_usage_counts_each_prompt_once() -> None:
    usages = [Usage(10, 3, 4, 1), Usage(10, 5, 10), Usage(7, 2, 0), Usage(7, 1, 7)]
    total = total_usage(usages, 2)
    assert (total.prompt_tokens, total.completion_tokens, total.cached_tokens,
            total.memory_tokens) == (17, 11, 4, 1)


def test_logprob_entries_from_a_distribution() -> None:
    class Vocab:
        def piece(self, token: int) -> bytes:
            return f"<{token}>".encode()

    logits = np.array([0.0, 2.0, 1.0, -1.0], dtype=np.float32)
    lp = logits - np.log(np.exp(logits.astype(np.float64)).sum())
    assert np.isclose(log_normaliser(logits + 500), np.log(np.exp(logits).sum()) + 500)
    ids = np.arange(4, dtype=np.int32)
    e = entry(Vocab(), 2, ids, logits, 3)  # type: ignore[arg-type]
    assert (e.token, e.piece) == (2, b"<2>") and np.isclose(e.logprob, lp[2])
    assert [t.token for t in e.top] == [1, 2, 0]
    assert np.allclose([t.logprob for t in e.top], lp[[1, 2, 0]])
    assert entry(Vocab(), 0, ids, logits, 0).top == ()  # type: ignore[arg-type]
    shuffled = entry(Vocab(), 1, ids[::-1].copy(), logits[::-1].copy(), 1)  # type: ignore[arg-type]
    assert np.isclose(shuffled.logprob, lp[1]) and shuffled.top[0].token == 1


def test_chat_and_text_logprob_shapes() -> None:
    half = "語".encode()
    body = chat_logprobs([_lp(b"Hi", -0.5), _lp(half[:2], -1.0)])
    first, second = body["content"]
    assert first == {"token": "Hi", "logprob": -0.5, "bytes": list(b"Hi"), "top_logprobs": [
        {"token": "Hi", "logprob": -0.5, "bytes": list(b"Hi")},
        {"token": "zz", "logprob": -1.5, "bytes": list(b"zz")}]}
    assert second["token"] == "\\xe8\\xaa" and second["bytes"] == list(half[:2])
    offsets = TextOffsets(prompt_chars=3)
    part = offsets.logprobs([_lp(b"Hi", -0.5), _lp(half[:2], -1.0)])
    assert part["tokens"] == ["Hi", "\\xe8\\xaa"] and part["text_offset"] == [3, 5]
    assert part["top_logprobs"][0] == {"Hi": -0.5, "zz": -1.5}
    rest = offsets.logprobs([_lp(half[2:], -0.1), _lp(b"!", -0.2)])
    assert rest["text_offset"] == [5, 6]  # the character completed counts once


def test_choices_body_and_stream_index_every_choice() -> None:
    job = _job("chat", 2, 1)
    gens = [Generation("a", "stop", Usage(4, 1, 2), (_lp(b"a", -0.1),)),
            Generation("bc", "length", Usage(4, 2, 4), (_lp(b"b", -0.3), _lp(b"c", -0.2)))]
    body = choices_body([job], gens, "model", "fp")
    assert [c["index"] for c in body["choices"]] == [0, 1]
    assert body["choices"][1]["logprobs"]["content"][1]["token"] == "c"
    assert body["usage"]["prompt_tokens"] == 4 and body["usage"]["completion_tokens"] == 3
    assert body["usage"]["prompt_tokens_details"]["cached_tokens"] == 2
    streamed = _job("text", 2, None, stream=True)
    fmt = ChoicesFormatter([streamed], "model", "fp")
    assert fmt.first() == []  # no echo: nothing to open with
    out = fmt.chunk(Chunk("x", index=1))
    assert out[0]["choices"][0]["index"] == 1 and out[0]["choices"][0]["logprobs"] is None
    assert not any("usage" in b for b in fmt.chunk(Chunk("", "stop", Usage(4, 1, 0), index=1)))
    last = fmt.chunk(Chunk("", "length", Usage(4, 2, 0), index=0))
    assert last[-1]["usage"]["completion_tokens"] == 3  # after the last choice to finish


def test_cors_policy() -> None:
    off = CorsPolicy.parse("")
    assert not off.enabled and off.headers("https://a.example") == {}
    policy = CorsPolicy.parse(" https://a.example/ , https://b.example ")
    assert policy.allows("https://a.example") and not policy.allows("https://c.example")
    assert policy.headers("https://a.example")["Access-Control-Allow-Origin"] \
        == "https://a.example"
    assert "Access-Control-Allow-Origin" not in policy.headers("https://c.example")
    assert CorsPolicy.parse("*").allows("https://anything.example")
