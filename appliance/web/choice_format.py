"""A request's choices as OpenAI bodies: n per prompt, one or more prompts, log-probabilities.

Each choice is rendered by :mod:`appliance.web.formatting` as if it were alone; here it gets
its ``index``, its ``logprobs`` (chat: ``{"content": [{token, logprob, bytes,
top_logprobs}]}``; completions: ``{tokens, token_logprobs, top_logprobs, text_offset}``) and
the request gets one usage (each prompt once, every choice's completion). A stream's usage
chunk follows the last choice to finish.
"""

from __future__ import annotations

import codecs
import dataclasses
from collections.abc import Sequence
from typing import Any

from appliance.engine.types import TokenLogprob, TopLogprob
from appliance.pipeline.choices import total_usage
from appliance.pipeline.job import Chunk, Generation, Job, Usage
from appliance.web.formatting import ChunkFormatter, completion_body, usage_body


def _token(piece: bytes) -> str:
    """A token's text; a piece that is part of a character shows its bytes (``\\xe6``)."""
    return piece.decode("utf-8", "backslashreplace")


def _alternative(top: TopLogprob) -> dict[str, Any]:
    return {"token": _token(top.piece), "logprob": top.logprob, "bytes": list(top.piece)}


def chat_logprobs(entries: Sequence[TokenLogprob]) -> dict[str, Any]:
    return {"content": [
        {"token": _token(e.piece), "logprob": e.logprob, "bytes": list(e.piece),
         "top_logprobs": [_alternative(t) for t in e.top]} for e in entries],
        "refusal": None}


class TextOffsets:
    """Where each token of one choice starts, in characters of prompt + completion (the
    legacy ``text_offset``), carried across a stream's chunks."""

    def __init__(self, prompt_chars: int) -> None:
        self._at = prompt_chars
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def logprobs(self, entries: Sequence[TokenLogprob]) -> dict[str, Any]:
        offsets = []
        for e in entries:
            offsets.append(self._at)
            self._at += len(self._decoder.decode(e.piece))
        return {"tokens": [_token(e.piece) for e in entries],
                "token_logprobs": [e.logprob for e in entries],
                "top_logprobs": [{_token(t.piece): t.logprob for t in e.top} for e in entries],
                "text_offset": offsets}


def _logprobs(job: Job, entries: Sequence[TokenLogprob],
              offsets: TextOffsets | None) -> dict[str, Any]:
    if job.kind == "chat":
        return chat_logprobs(entries)
    return (offsets or TextOffsets(job.prompt_chars)).logprobs(entries)


def choices_body(jobs: Sequence[Job], generations: Sequence[Generation], model: str,
                 fingerprint: str | None) -> dict[str, Any]:
    """The whole response: every choice (``n`` per job, in index order) and one usage."""
    n = jobs[0].n
    body: dict[str, Any] = {}
    for i, generation in enumerate(generations):
        job = jobs[i // n]
        one = completion_body(job, generation, model, fingerprint)
        choice = one["choices"][0]
        choice["index"] = i
        if job.options.logprobs is not None:
            choice["logprobs"] = _logprobs(job, generation.logprobs, None)
        if body:
            body["choices"].append(choice)
        else:
            body = one
    body["usage"] = usage_body(total_usage([g.usage for g in generations], n))
    return body


class ChoicesFormatter:
    """Stream chunk bodies of every choice of one request."""

    def __init__(self, jobs: Sequence[Job], model: str, fingerprint: str | None) -> None:
        self._jobs = jobs
        self._n = jobs[0].n
        self._formatters = [ChunkFormatter(job, model, fingerprint) for job in jobs]
        self._finals: dict[int, Usage] = {}
        self._offsets = {k * self._n + j: TextOffsets(job.prompt_chars)
                         for k, job in enumerate(jobs) for j in range(self._n)}

    def first(self) -> list[dict[str, Any]]:
        """The opening chunk of each choice (chat: the role; text: the echoed prompt)."""
        out = []
        for k, formatter in enumerate(self._formatters):
            opening = formatter.first()
            for j in range(self._n if opening is not None else 0):
                assert opening is not None
                out.append(_indexed(opening, k * self._n + j))
        return out

    def chunk(self, c: Chunk) -> list[dict[str, Any]]:
        job = self._jobs[c.index // self._n]
        usage = None
        if c.finish_reason is not None and c.usage is not None:
            self._finals[c.index] = c.usage
            if len(self._finals) == len(self._offsets):  # the last choice to finish
                usage = total_usage([self._finals[i] for i in sorted(self._finals)], self._n)
        bodies = self._formatters[c.index // self._n].chunk(
            dataclasses.replace(c, usage=usage))
        bodies = [_indexed(b, c.index) if b["choices"] else b for b in bodies]
        if c.logprobs and bodies and job.options.logprobs is not None:
            bodies[0]["choices"][0]["logprobs"] = _logprobs(job, c.logprobs,
                                                            self._offsets[c.index])
        return bodies


def _indexed(body: dict[str, Any], index: int) -> dict[str, Any]:
    if index == 0:
        return body
    return {**body, "choices": [{**choice, "index": index} for choice in body["choices"]]}
