"""The request pipeline between the HTTP layer and the engine.

prepare (input guards, template, tokenize, length checks) -> admit -> submit to the engine
-> output rail -> collect or stream. Later stages (cache, memory) slot in here, not in the
handlers.

Guards: the input rail runs before anything is tokenised, so the model only ever sees the
redacted text; a block is a 400 ``content_filter`` naming the guard; a topic rail answers
with its configured text without the model. Generated text passes the streamed output rail
(``guards/output.py``) before it is yielded: nothing unchecked reaches the caller, and a
violation ends the answer with the policy's message and ``finish_reason="content_filter"``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
import uuid
from collections.abc import AsyncGenerator, Sequence

from appliance.admission.gate import ANONYMOUS, Gate
from appliance.admission.keys import KeyRecord
from appliance.api.requests import ChatRequest, CompletionRequest, GenerationOptions
from appliance.cache import (
    CacheDirectives,
    CacheQuery,
    CacheResult,
    ResponseCache,
    fingerprint,
    request_keys,
    scope_for,
)
from appliance.engine.chat import ChatMessage, ChatTemplate, NoChatTemplate
from appliance.engine.engine import Engine
from appliance.engine.models import ModelSpec, VerifiedModel
from appliance.engine.native import LlamaModel
from appliance.engine.types import (
    Finished,
    FinishReason,
    GenerationRequest,
    SamplingParams,
    TextDelta,
)
from appliance.errors import (
    ContextLengthExceeded,
    InternalError,
    InvalidRequest,
    ModelNotFound,
    NotReady,
    Unavailable,
)
from appliance.guards.pipeline import TIER_RULES
from appliance.guards.rails import Guards, InputCheck, PolicyRails, RulesStage, TextReport
from appliance.memory import MemoryStore
from appliance.memory_prompt import MemoryContext, inject_memory
from appliance.output_guard import OutputGuard, filtered, record_input, record_output
from appliance.pipeline_types import Chunk, Generation, Prepared, Usage
from appliance.store.vectors import Vector
from appliance.trace import RequestTrace

_BIG_PROMPT_CHARS = 16_384  # tokenise larger prompts off the event loop
_REPLAY_PIECE = re.compile(r"\s*\S+|\s+")  # a cached answer is replayed word by word
_REPLAY_WORDS = 4
_SUMMARY_TOKENS = 160


def _public_reason(reason: FinishReason) -> str:
    return "length" if reason == "length" else "stop"


class GenerationService:
    def __init__(self, engine: Engine, gate: Gate, served: VerifiedModel,
                 manifest: tuple[ModelSpec, ...], *, ctx_size: int,
                 template_fallback: str = "", guards_enabled: bool = True,
                 holdback_tokens: int = 32) -> None:
        self.engine = engine
        self.gate = gate
        self.served = served
        self.manifest = manifest
        self.ctx_size = ctx_size
        self.template_fallback = template_fallback
        self._template: ChatTemplate | NoChatTemplate | None = None
        self.guards_enabled = guards_enabled
        self.holdback_tokens = holdback_tokens
        # Set by the app once the guard models are loaded (or the error if they failed).
        self.guards: Guards | None = None
        self.guards_error: str | None = None
        # memory and cache (issue 5): set by the wiring
        self.cache: ResponseCache | None = None
        self.memory: MemoryStore | None = None

    # --- model identity -----------------------------------------------------------------
    @property
    def model_id(self) -> str:
        return self.served.spec.id

    @property
    def fingerprint(self) -> str:
        return "fp_" + self.served.sha256[:12]

    def check_model(self, name: str) -> None:
        if name in ("default", self.model_id, self.served.spec.file):
            return
        if any(s.id == name for s in self.manifest):
            raise ModelNotFound(
                f"model {name!r} is in the manifest but not loaded; this server serves "
                f"{self.model_id!r} (use \"default\" or restart with --model {name})",
                param="model")
        raise ModelNotFound(f"the model {name!r} does not exist; this server serves "
                            f"{self.model_id!r} (\"default\" always names it)", param="model")

    def _llama(self) -> LlamaModel:
        if not self.engine.ready or self.engine.model is None:
            if self.engine.state == "failed":
                raise Unavailable(f"the model failed to load: {self.engine.error}")
            raise NotReady("the model is still loading; retry shortly", retry_after=2)
        return self.engine.model

    def template(self) -> ChatTemplate | NoChatTemplate:
        if self._template is None:
            model = self._llama()
            source = model.chat_template() if self.served.spec.chat_template != "none" else None
            source = source or self.template_fallback or None
            if source is None:
                self._template = NoChatTemplate(self.model_id)
            else:
                self._template = ChatTemplate(
                    source, bos_token=model.token_text(model.bos) if model.bos >= 0 else "",
                    eos_token=model.token_text(model.eos) if model.eos >= 0 else "")
        return self._template

    # --- preparation --------------------------------------------------------------------
    async def prepare_chat(self, req: ChatRequest, key: KeyRecord | None = None,
                           trace: RequestTrace | None = None,
                           directives: CacheDirectives | None = None,
                           session_id: str | None = None) -> Prepared:
        """Input rules (redaction) on the request's messages, then memory injection, the
        chat template and the prompt's tokens; the cache query when the request is
        cacheable."""
        self.check_model(req.options.model)
        template = self.template()
        messages = req.messages
        rails = self.rails_for(key)
        stage = None
        if rails is not None:
            users = [i for i, m in enumerate(messages) if m.role == "user"]
            main = users[-1] if users else len(messages) - 1
            stage = self._check_rules(rails, [m.content for m in messages], main, trace)
            messages = tuple(m if text == m.content else ChatMessage(m.role, text, m.name)
                             for m, text in zip(messages, stage.texts, strict=True))
        context = self._memory_context(messages, req.options.user, key, session_id)
        memory_tokens = 0
        if context is not None and self.memory is not None:
            injection = inject_memory(messages, await self.memory.recall(
                context.key_id, context.user, context.session_id, context.last_user))
            messages = injection.messages
            model = self._llama()
            memory_tokens = sum(len(model.tokenize(text, add_special=False,
                                                   parse_special=False))
                                for text in injection.added)
        tokens = await self._tokenize(template.render(messages), chat=True)
        prepared = dataclasses.replace(
            self._prepared("chat", tokens, req.options, rails=rails, stage=stage),
            memory=context, memory_tokens=memory_tokens)
        return self._with_cache(prepared, key, directives, messages)

    def _memory_context(self, messages: tuple[ChatMessage, ...], user: str | None,
                        key: KeyRecord | None, session_id: str | None) -> MemoryContext | None:
        user = user or ""
        if self.memory is None or key is None or not (user or session_id):
            return None
        last = messages[-1]  # already redacted: memory never stores what the rules mask
        return MemoryContext(key.id, user, session_id or "",
                             last.content if last.role == "user" else "")

    async def prepare_completion(self, req: CompletionRequest, key: KeyRecord | None = None,
                                 trace: RequestTrace | None = None,
                                 directives: CacheDirectives | None = None) -> Prepared:
        self.check_model(req.options.model)
        model = self._llama()
        ids: list[int] = []
        if isinstance(req.prompt, str):
            text: str | None = req.prompt
            echo = req.prompt
        else:
            ids = list(req.prompt)
            bad = [t for t in req.prompt if not 0 <= t < model.n_vocab]
            if bad:
                raise InvalidRequest(f"token id {bad[0]} is outside the vocabulary "
                                     f"(0..{model.n_vocab - 1})", param="prompt")
            text = None
            echo = b"".join(model.piece(t) for t in req.prompt).decode("utf-8", "replace")
        rails = self.rails_for(key)
        stage = None
        if rails is not None:
            stage = self._check_rules(rails, [echo], 0, trace)
            if stage.texts[0] != echo:  # redacted: the model sees the masked text
                text = echo = stage.texts[0]
        tokens = await self._tokenize(text, chat=False) if text is not None else ids
        prepared = self._prepared("text", tokens, req.options,
                                  echo_text=echo if req.echo else "",
                                  default_max=16, rails=rails, stage=stage)
        return self._with_cache(prepared, key, directives, ())

    # --- guards -------------------------------------------------------------------------
    def rails_for(self, key: KeyRecord | None) -> PolicyRails | None:
        """The guard rails for a key's requests (None when guards are switched off)."""
        if not self.guards_enabled:
            return None
        if self.guards is None:
            if self.guards_error is not None:
                raise Unavailable(f"the guards failed to load: {self.guards_error}")
            raise NotReady("the guards are still loading; retry shortly", retry_after=2)
        return self.guards.rails(key.guard_policy if key is not None else None)

    async def check_texts(self, texts: Sequence[str], role: str, key: KeyRecord | None,
                          policy: str | None = None) -> list[TextReport]:
        """``POST /v1/guard``: each text through the input (role user) or output rail."""
        rails = self.rails_for(key)
        if rails is None or self.guards is None:
            raise InvalidRequest("the guards are switched off on this server (guards = false)",
                                 code="guards_disabled")
        if policy is not None:
            rails = self.guards.rails(policy)
        return [await self.guards.check_text(text, role, rails) for text in texts]

    def _check_rules(self, rails: PolicyRails, texts: list[str], main: int,
                     trace: RequestTrace | None) -> RulesStage:
        """The input rail's rules tier (inline, before admission): redact, or block."""
        assert self.guards is not None
        stage = self.guards.check_rules(texts, main, rails)
        if trace is not None:
            trace.guard_s += stage.ms / 1000.0
            record_input(trace, stage.verdicts)
        if stage.blocker is not None:
            raise filtered(rails, stage.blocker)
        return stage

    async def _check_classifiers(self, prepared: Prepared,
                                 trace: RequestTrace | None) -> InputCheck | None:
        """The input rail's classifier tiers and topic rail (after admission, so the bounded
        queue limits how many run at once); raises ContentFiltered on a block."""
        if prepared.rails is None or prepared.stage is None or self.guards is None:
            return None
        check = await self.guards.check_classifiers(prepared.stage, prepared.rails)
        if trace is not None:
            trace.guard_s += (check.ms - prepared.stage.ms) / 1000.0
            record_input(trace, tuple(v for v in check.verdicts if v.tier > TIER_RULES))
        if not check.allowed:
            raise filtered(prepared.rails, check.blocker)
        return check

    async def _tokenize(self, text: str, *, chat: bool) -> list[int]:
        model = self._llama()

        def run() -> list[int]:
            if chat:  # the template already spelt out special tokens
                toks = model.tokenize(text, add_special=False, parse_special=True)
                if model.add_bos and model.bos >= 0 and (not toks or toks[0] != model.bos):
                    toks.insert(0, model.bos)
                return toks
            return model.tokenize(text, add_special=True, parse_special=False)

        if len(text) > _BIG_PROMPT_CHARS:
            return await asyncio.to_thread(run)
        return run()

    def _prepared(self, kind: str, tokens: list[int], options: GenerationOptions, *,
                  echo_text: str = "", default_max: int | None = None,
                  rails: PolicyRails | None = None, stage: RulesStage | None = None) -> Prepared:
        n_prompt = len(tokens)
        if n_prompt == 0:
            raise InvalidRequest("the prompt is empty", param="prompt")
        n_vocab = self._llama().n_vocab
        for token, _ in options.logit_bias:
            if token >= n_vocab:
                raise InvalidRequest(f"'logit_bias' token id {token} is outside the "
                                     f"vocabulary (0..{n_vocab - 1})", param="logit_bias")
        room = self.ctx_size - n_prompt
        if room < 1:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {self.ctx_size} tokens. However, "
                f"your messages resulted in {n_prompt} tokens. Please reduce the length of "
                f"the messages.", param="messages" if kind == "chat" else "prompt")
        max_tokens = options.max_tokens
        if max_tokens is None:
            max_tokens = min(default_max or room, room)
        elif n_prompt + max_tokens > self.ctx_size:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {self.ctx_size} tokens. However, "
                f"you requested {n_prompt + max_tokens} tokens ({n_prompt} in the prompt, "
                f"{max_tokens} in the completion). Please reduce the length of the prompt "
                f"or max_tokens.", param="max_tokens")
        rid = ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]
        request = GenerationRequest(prompt_tokens=tuple(tokens), max_tokens=max_tokens,
                                    sampling=options.sampling, stop=options.stop,
                                    ignore_eos=options.ignore_eos, request_id=rid)
        return Prepared(id=rid, created=int(time.time()), kind=kind, request=request,
                        options=options, echo_text=echo_text, rails=rails, stage=stage)

    # --- response cache (issue 5) ---------------------------------------------------------
    def _with_cache(self, prepared: Prepared, key: KeyRecord | None,
                    directives: CacheDirectives | None,
                    messages: tuple[ChatMessage, ...]) -> Prepared:
        cache = self.cache
        if cache is None or key is None or not cache.cacheable(prepared.options.sampling):
            return prepared
        directives = directives or CacheDirectives()
        template = self.template()
        source = template.source if isinstance(template, ChatTemplate) else ""
        # Entries made under another model file or template are deleted (adopt); the guard
        # policy's version is part of every key, so an answer checked under one policy is
        # never served under another (per-key policies share the table).
        fp = fingerprint(self.served.sha256, source, "")
        policy = prepared.rails.policy.version if prepared.rails is not None else "guards-off"
        request = prepared.request
        exact, context, text = request_keys(
            fingerprint(self.served.sha256, source, policy), prepared.kind,
            request.prompt_tokens, request.sampling, request.max_tokens, request.stop,
            messages)
        query = CacheQuery(scope=scope_for(key.id, prepared.options.user,
                                           shared=directives.shared),
                           exact_key=exact, context=context, fingerprint=fp,
                           kind=prepared.kind, text=text, directives=directives)
        return dataclasses.replace(prepared, cache=query)

    async def _cache_lookup(self, prepared: Prepared, trace: RequestTrace | None,
                            vector: Vector | None, *, semantic: bool) -> CacheResult | None:
        """The exact tier alone (``semantic=False``: before admission and the input
        classifiers, which the identical stored request already passed), or both tiers
        (after the classifiers, reusing their embedding as ``vector``)."""
        if self.cache is None or prepared.cache is None:
            if trace is not None and self.cache is not None:
                trace.cache = "bypass"
            return None
        await self.cache.adopt(prepared.cache.fingerprint)
        query = prepared.cache if semantic else dataclasses.replace(prepared.cache, text=None)
        result = await self.cache.lookup(query, vector)
        if trace is not None:
            trace.cache = result.status
            trace.cache_similarity = result.similarity
        return result

    async def _replay(self, prepared: Prepared, result: CacheResult, key: KeyRecord | None,
                      trace: RequestTrace | None) -> AsyncGenerator[Chunk, None]:
        """A cached answer, as a stream of word-sized chunks; charged to the key's buckets
        like a generation but without a decoding slot (``key`` None: the caller holds an
        admission ticket that pays for it)."""
        entry = result.entry
        assert entry is not None
        n_prompt = len(prepared.request.prompt_tokens)
        if key is not None:
            self.gate.limiter.admit(key, n_prompt, entry.completion_tokens).settle(
                n_prompt + entry.completion_tokens)
        if trace is not None:
            trace.released(entry.text, entry.completion_tokens)
            trace.prompt_tokens = n_prompt
            trace.completion_tokens = entry.completion_tokens
            trace.cached_tokens = n_prompt
            trace.memory_tokens = prepared.memory_tokens
        pieces = _REPLAY_PIECE.findall(entry.text)
        for start in range(0, len(pieces), _REPLAY_WORDS):
            yield Chunk("".join(pieces[start:start + _REPLAY_WORDS]))
        await self._remember(prepared, entry.text)
        yield Chunk("", entry.finish_reason,
                    Usage(n_prompt, entry.completion_tokens, n_prompt,
                          prepared.memory_tokens))
    # --- end response cache ----------------------------------------------------------------

    # --- memory (issue 5) ------------------------------------------------------------------
    async def _remember(self, prepared: Prepared, answer: str) -> None:
        """Keep the exchange as session turns (when the request named a session)."""
        context = prepared.memory
        if self.memory is None or context is None or not context.session_id:
            return
        await self.memory.add_turns(context.key_id, context.user, context.session_id,
                                    [("user", context.last_user), ("assistant", answer)])
    async def summarise(self, instruction: str, text: str) -> str:
        """One greedy generation for background work (session summaries): admitted
        through the same queue as requests, under the unlimited internal key."""
        options = GenerationOptions(
            model="default", max_tokens=_SUMMARY_TOKENS, sampling=SamplingParams(
                temperature=0.0), stop=(), stream=False, include_usage=False, user=None,
            logit_bias=())
        req = ChatRequest(options=options, messages=(ChatMessage("system", instruction),
                                                     ChatMessage("user", text)))
        result = await self.complete(await self.prepare_chat(req), ANONYMOUS)
        return result.text
    # --- end memory ------------------------------------------------------------------------

    # --- generation ---------------------------------------------------------------------
    async def stream(self, prepared: Prepared, key: KeyRecord,
                     trace: RequestTrace | None = None) -> AsyncGenerator[Chunk, None]:
        """Chunks as the engine releases text and the output rail passes it.

        An exact cache hit is replayed at once (the same request passed the input rail under
        the same policy when it was stored). Otherwise: admission (rate limit, then a
        decoding slot from the bounded queue); the input classifiers run while the engine
        prefills, and nothing is yielded before their verdict (a block is ContentFiltered, a
        topic answer or a semantic cache hit cancels the sequence); then the output rail.
        The sequence is cancelled if the consumer stops early (client gone), is cancelled,
        or the output rail ends the answer. A normal answer is stored in the cache and
        remembered in the session."""
        self._llama()
        exact = await self._cache_lookup(prepared, trace, None, semantic=False)
        if exact is not None and exact.entry is not None:
            async for piece in self._replay(prepared, exact, key, trace):
                yield piece
            return
        request = prepared.request
        queued_at = time.perf_counter()
        ticket = await self.gate.admit(key, len(request.prompt_tokens), request.max_tokens)
        if trace is not None:
            trace.queue_wait_s = time.perf_counter() - queued_at
        used = len(request.prompt_tokens)
        handle = None
        verdict = (asyncio.ensure_future(self._check_classifiers(prepared, trace))
                   if prepared.stage is not None else None)
        lookup: CacheResult | None = None
        texts: list[str] = []
        try:
            guard = (OutputGuard(self.guards, prepared.rails, len(request.prompt_tokens),
                                 holdback_tokens=self.holdback_tokens, trace=trace)
                     if prepared.rails is not None and self.guards is not None else None)
            handle = self.engine.submit(request)
            first = True
            while True:
                events = await handle.next_events()
                if first:
                    first = False
                    vector = None
                    if verdict is not None:
                        check, verdict = await verdict, None
                        if check is not None and check.topic is not None:  # no model answer
                            handle.cancel()
                            used = 0
                            if trace is not None:
                                trace.released(check.topic.answer, 0)
                            yield Chunk(check.topic.answer, "stop",
                                        Usage(len(request.prompt_tokens), 0, 0))
                            return
                        vector = self._guard_vector(prepared, check)
                    lookup = await self._cache_lookup(prepared, trace, vector, semantic=True)
                    if lookup is not None and lookup.entry is not None:
                        handle.cancel()
                        used = len(request.prompt_tokens) + lookup.entry.completion_tokens
                        async for piece in self._replay(prepared, lookup, None, trace):
                            yield piece
                        return
                for event in events:
                    if isinstance(event, TextDelta):
                        used = len(request.prompt_tokens) + event.n_tokens
                        if guard is None:
                            if trace is not None:
                                trace.released(event.text, event.n_tokens)
                            texts.append(event.text)
                            yield Chunk(event.text)
                            continue
                        async for chunk in guard.feed(event.text, event.n_tokens):
                            texts.append(chunk.text)
                            yield chunk
                            if chunk.finish_reason is not None:
                                return
                    elif isinstance(event, Finished):
                        used = event.prompt_tokens + event.completion_tokens
                        final = self._final(event)
                        if trace is not None:
                            trace.prefill_s = event.prefill_seconds
                            trace.prompt_tokens = event.prompt_tokens
                            trace.completion_tokens = event.completion_tokens
                            trace.cached_tokens = event.cached_tokens
                        if guard is not None:
                            async for chunk in guard.finish(final):
                                texts.append(chunk.text)
                                if chunk.finish_reason is not None:
                                    chunk = await self._finished(prepared, lookup, texts,
                                                                 chunk, trace)
                                yield chunk
                            return
                        if trace is not None:
                            trace.released(final.text, event.completion_tokens)
                        texts.append(final.text)
                        yield await self._finished(prepared, lookup, texts, final, trace)
                        return
        finally:
            if verdict is not None:
                verdict.cancel()
            if handle is not None:
                handle.cancel()
            ticket.release(used)

    def _guard_vector(self, prepared: Prepared, check: InputCheck | None) -> Vector | None:
        """The input rail's embedding, when it embedded exactly the cache's text."""
        if (check is None or check.decision.embedding is None or prepared.cache is None
                or prepared.stage is None):
            return None
        seen = prepared.stage.texts[prepared.stage.main]
        return check.decision.embedding if prepared.cache.text == seen else None

    async def _finished(self, prepared: Prepared, lookup: CacheResult | None,
                        texts: list[str], final: Chunk, trace: RequestTrace | None) -> Chunk:
        """A normal answer (it passed the output rail) goes to the cache and the session's
        memory; the final chunk's usage says how many prompt tokens memory added."""
        if final.usage is None or final.finish_reason not in ("stop", "length"):
            return final
        answer = "".join(texts)
        if lookup is not None and self.cache is not None and prepared.cache is not None:
            await self.cache.store(prepared.cache, lookup.vector, answer, final.finish_reason,
                                   final.usage.prompt_tokens, final.usage.completion_tokens)
        if prepared.memory is not None:
            await self._remember(prepared, answer)
            if trace is not None:
                trace.memory_tokens = prepared.memory_tokens
            return dataclasses.replace(final, usage=dataclasses.replace(
                final.usage, memory_tokens=prepared.memory_tokens))
        return final

    async def complete(self, prepared: Prepared, key: KeyRecord,
                       trace: RequestTrace | None = None) -> Generation:
        parts = [prepared.echo_text] if prepared.echo_text else []
        async for chunk in self.stream(prepared, key, trace):
            parts.append(chunk.text)
            if chunk.finish_reason is not None and chunk.usage is not None:
                text = "".join(parts)
                if prepared.rails is not None and chunk.finish_reason != "content_filter":
                    # Checked whole as well: a pattern spanning many windows is caught too.
                    verdict = prepared.rails.output.check_text(text)
                    if verdict.violated and verdict.replacement is not None:
                        record_output(trace, verdict.rule or "output-rules", "block", 0.0)
                        return Generation(verdict.replacement, "content_filter", chunk.usage)
                return Generation(text, chunk.finish_reason, chunk.usage)
        raise InternalError("the generation ended without a result")

    def _final(self, event: Finished) -> Chunk:
        if event.reason == "error":
            raise InternalError(f"generation failed: {event.error}")
        if event.reason == "cancelled":
            raise Unavailable("the generation was cancelled because the server is stopping")
        usage = Usage(event.prompt_tokens, event.completion_tokens, event.cached_tokens)
        return Chunk(event.text, _public_reason(event.reason), usage)

