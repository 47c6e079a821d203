"""The response cache as the pipeline uses it: the query of a job, the exact and semantic
lookups, the replay of a hit, and storing a finished answer.

An exact hit is served before admission: the identical request passed the input rail under
the same policy when it was stored. The semantic tier is asked only after the input
classifiers passed; it embeds the cache's text itself (the guard network needs no sentence
embedding), unless the policy's topic rail already embedded exactly that text.
A replay is charged to the key's buckets like a generation of that size.

Which model answered is part of every key: the embedded model by its file's sha256 and chat
template (entries of an older file or template are dropped when a new one is first used),
an upstream model by its id (its template and weights are the server's: entries age out
by ``cache_ttl_s``), its prompt by the messages or text it was sent.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncGenerator, Sequence

from appliance.admission.gate import Gate
from appliance.cache.keys import fingerprint, request_keys, scope_for
from appliance.cache.response import CachedResponse, CacheQuery, CacheResult, ResponseCache
from appliance.engine.chat import ChatMessage
from appliance.engine.tokenizer import Tokenizer
from appliance.guards.rails import InputCheck
from appliance.observability.trace import RequestTrace
from appliance.pipeline.job import Chunk, Job, RequestContext, Usage
from appliance.routing.catalog import Catalog
from appliance.store.vectors import Vector

_REPLAY_PIECE = re.compile(r"\s*\S+|\s+")  # a cached answer is replayed word by word
_REPLAY_WORDS = 4


class CacheStage:
    def __init__(self, cache: ResponseCache, gate: Gate, tokenizer: Tokenizer | None, *,
                 model_sha256: str | None, catalog: Catalog | None = None) -> None:
        self._cache = cache
        self._gate = gate
        self._tokenizer = tokenizer
        self._sha256 = model_sha256
        self._catalog = catalog

    def query(self, job: Job, ctx: RequestContext,
              messages: Sequence[ChatMessage]) -> CacheQuery | None:
        """The job's cache keys, or None when it is not cacheable (sampling too random;
        several choices or log-probabilities, which a stored answer does not have)."""
        if not self._cache.cacheable(job.options.sampling):
            return None
        if job.options.n > 1 or job.options.logprobs is not None:
            return None
        request = job.request
        prompt: Sequence[object]
        if job.route.embedded:
            assert self._tokenizer is not None and self._sha256 is not None
            model, source = self._sha256, self._tokenizer.template_source()
            prompt = request.prompt_tokens
        else:
            model, source = _upstream(job.route.model), ""
            text = request.text
            prompt = ((text.text,) if text is not None and text.text is not None else
                      tuple((m.role, m.name, m.content) for m in messages))
        # Entries made under another model file or template are deleted (adopt); the guard
        # policy's version is part of every key, so an answer checked under one policy is
        # never served under another (per-key policies share the table).
        policy = job.rails.policy.version if job.rails is not None else "guards-off"
        exact, context, last = request_keys(
            fingerprint(model, source, policy), job.kind, prompt, request.sampling,
            request.max_tokens, request.stop, messages, job.shape)
        return CacheQuery(scope=scope_for(ctx.key.id, ctx.user,
                                          shared=ctx.directives.shared),
                          exact_key=exact, context=context,
                          fingerprint=fingerprint(model, source, ""), kind=job.kind,
                          text=last, directives=ctx.directives)

    async def exact(self, job: Job, trace: RequestTrace) -> CachedResponse | None:
        """The exact tier alone (before admission and the input classifiers)."""
        if job.cache is None:
            trace.cache = "bypass"
            return None
        result = await self._lookup(job, dataclasses.replace(job.cache, text=None), None,
                                    trace)
        return result.entry

    async def semantic(self, job: Job, check: InputCheck | None,
                       trace: RequestTrace) -> CacheResult | None:
        """Both tiers, after the input classifiers passed (the topic rail's embedding
        reused when there is one)."""
        if job.cache is None:
            return None
        return await self._lookup(job, job.cache, self._guard_vector(job, check), trace)

    async def _lookup(self, job: Job, query: CacheQuery, vector: Vector | None,
                      trace: RequestTrace) -> CacheResult:
        if job.route.embedded:  # (upstream models' entries are kept)
            models = self._catalog.upstream_models() if self._catalog is not None else ()
            await self._cache.adopt(query.fingerprint,
                                    [fingerprint(_upstream(m), "", "") for m in models])
        result = await self._cache.lookup(query, vector)
        trace.cache = result.status
        trace.cache_similarity = result.similarity
        return result

    @staticmethod
    def _guard_vector(job: Job, check: InputCheck | None) -> Vector | None:
        """The topic rail's embedding, when it embedded exactly the cache's text (None
        otherwise: the cache embeds for itself, only when it is consulted)."""
        if (check is None or check.decision.embedding is None or job.cache is None
                or job.rules is None):
            return None
        seen = job.rules.texts[job.rules.main]
        return check.decision.embedding if job.cache.text == seen else None

    async def replay(self, job: Job, entry: CachedResponse, ctx: RequestContext, *,
                     charge: bool) -> AsyncGenerator[Chunk, None]:
        """A cached answer as word-sized chunks; ``charge`` it to the key (False: the
        caller holds an admission ticket that pays for it)."""
        trace = ctx.trace
        n_prompt = job.prompt_tokens
        if charge:
            self._gate.charge(ctx.key, n_prompt + entry.completion_tokens)
        trace.released(entry.text, entry.completion_tokens)
        trace.prompt_tokens = n_prompt
        trace.completion_tokens = entry.completion_tokens
        trace.cached_tokens = n_prompt
        pieces = _REPLAY_PIECE.findall(entry.text)
        for start in range(0, len(pieces), _REPLAY_WORDS):
            yield Chunk("".join(pieces[start:start + _REPLAY_WORDS]))
        yield Chunk("", entry.finish_reason,
                    Usage(n_prompt, entry.completion_tokens, n_prompt, job.memory_tokens))

    async def store(self, job: Job, lookup: CacheResult | None, answer: str,
                    final: Chunk) -> None:
        """A normal answer (it passed the output rail), after a lookup that missed."""
        if (lookup is None or job.cache is None or final.usage is None
                or final.finish_reason not in ("stop", "length", "tool_calls")):
            return
        await self._cache.store(job.cache, lookup.vector, answer, final.finish_reason,
                                final.usage.prompt_tokens, final.usage.completion_tokens)


def _upstream(model: str) -> str:
    """An upstream model's identity in the cache's fingerprint."""
    return f"upstream:{model}"
