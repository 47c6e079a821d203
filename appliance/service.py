"""The request pipeline between the HTTP layer and the engine.

prepare (template, tokenize, length checks) -> submit to the engine -> collect or stream.
Later stages (admission, guards, cache, memory) slot in here, not in the handlers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from appliance.admission.gate import ANONYMOUS, Gate
from appliance.admission.keys import KeyRecord
from appliance.api.requests import ChatRequest, CompletionRequest, GenerationOptions
from appliance.cache import (
    PLACEHOLDER_POLICY_VERSION,
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
from appliance.memory import MemoryStore
from appliance.memory_prompt import MemoryContext, inject_memory
from appliance.store.vectors import Vector
from appliance.trace import RequestTrace

_BIG_PROMPT_CHARS = 16_384  # tokenise larger prompts off the event loop
_REPLAY_PIECE = re.compile(r"\s*\S+|\s+")  # a cached answer is replayed word by word
_REPLAY_WORDS = 4
_SUMMARY_TOKENS = 160


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    memory_tokens: int = 0  # of prompt_tokens, added by memory injection

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Prepared:
    id: str
    created: int
    kind: str  # "chat" | "text"
    request: GenerationRequest
    options: GenerationOptions
    echo_text: str = ""
    cache: CacheQuery | None = None  # None: the response cache is not consulted
    memory: MemoryContext | None = None  # None: nothing is remembered
    memory_tokens: int = 0


@dataclass(frozen=True)
class Chunk:
    """One piece of a streamed generation; the last has ``finish_reason`` and ``usage``."""

    text: str
    finish_reason: str | None = None
    usage: Usage | None = None


@dataclass(frozen=True)
class Generation:
    text: str
    finish_reason: str
    usage: Usage


def _public_reason(reason: FinishReason) -> str:
    return "length" if reason == "length" else "stop"


class GenerationService:
    def __init__(self, engine: Engine, gate: Gate, served: VerifiedModel,
                 manifest: tuple[ModelSpec, ...], *, ctx_size: int,
                 template_fallback: str = "") -> None:
        self.engine = engine
        self.gate = gate
        self.served = served
        self.manifest = manifest
        self.ctx_size = ctx_size
        self.template_fallback = template_fallback
        self._template: ChatTemplate | NoChatTemplate | None = None
        # memory and cache (issue 5): set by the wiring; the guard work supplies the version
        self.cache: ResponseCache | None = None
        self.memory: MemoryStore | None = None
        self.policy_version = PLACEHOLDER_POLICY_VERSION

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
                           directives: CacheDirectives | None = None,
                           session_id: str | None = None) -> Prepared:
        self.check_model(req.options.model)
        template = self.template()
        context = self._memory_context(req, key, session_id)
        messages, memory_tokens = req.messages, 0
        if context is not None and self.memory is not None:
            injection = inject_memory(req.messages, await self.memory.recall(
                context.key_id, context.user, context.session_id, context.last_user))
            messages = injection.messages
            model = self._llama()
            memory_tokens = sum(len(model.tokenize(text, add_special=False,
                                                   parse_special=False))
                                for text in injection.added)
        tokens = await self._tokenize(template.render(messages), chat=True)
        prepared = dataclasses.replace(self._prepared("chat", tokens, req.options),
                                       memory=context, memory_tokens=memory_tokens)
        return self._with_cache(prepared, key, directives, messages)

    def _memory_context(self, req: ChatRequest, key: KeyRecord | None,
                        session_id: str | None) -> MemoryContext | None:
        user = req.options.user or ""
        if self.memory is None or key is None or not (user or session_id):
            return None
        last = req.messages[-1]
        return MemoryContext(key.id, user, session_id or "",
                             last.content if last.role == "user" else "")

    async def prepare_completion(self, req: CompletionRequest, key: KeyRecord | None = None,
                                 directives: CacheDirectives | None = None) -> Prepared:
        prepared = await self._prepare_completion(req)
        return self._with_cache(prepared, key, directives, ())

    async def _prepare_completion(self, req: CompletionRequest) -> Prepared:
        self.check_model(req.options.model)
        model = self._llama()
        if isinstance(req.prompt, str):
            tokens = await self._tokenize(req.prompt, chat=False)
            echo = req.prompt
        else:
            bad = [t for t in req.prompt if not 0 <= t < model.n_vocab]
            if bad:
                raise InvalidRequest(f"token id {bad[0]} is outside the vocabulary "
                                     f"(0..{model.n_vocab - 1})", param="prompt")
            tokens = list(req.prompt)
            echo = b"".join(model.piece(t) for t in tokens).decode("utf-8", "replace")
        return self._prepared("text", tokens, req.options,
                              echo_text=echo if req.echo else "",
                              default_max=16)

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
                  echo_text: str = "", default_max: int | None = None) -> Prepared:
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
                        options=options, echo_text=echo_text)

    # --- response cache (issue 5) ---------------------------------------------------------
    def _with_cache(self, prepared: Prepared, key: KeyRecord | None,
                    directives: CacheDirectives | None,
                    messages: tuple[ChatMessage, ...]) -> Prepared:
        cache = self.cache
        if cache is None or key is None or not cache.cacheable(prepared.options.sampling):
            return prepared
        directives = directives or CacheDirectives()
        template = self.template()
        fp = fingerprint(self.served.sha256,
                         template.source if isinstance(template, ChatTemplate) else "",
                         self.policy_version)
        request = prepared.request
        exact, context, text = request_keys(
            fp, prepared.kind, request.prompt_tokens, request.sampling, request.max_tokens,
            request.stop, messages)
        query = CacheQuery(scope=scope_for(key.id, prepared.options.user,
                                           shared=directives.shared),
                           exact_key=exact, context=context, fingerprint=fp,
                           kind=prepared.kind, text=text, directives=directives)
        return dataclasses.replace(prepared, cache=query)

    async def _cache_lookup(self, prepared: Prepared, trace: RequestTrace | None,
                            vector: Vector | None) -> CacheResult | None:
        if self.cache is None or prepared.cache is None:
            if trace is not None and self.cache is not None:
                trace.cache = "bypass"
            return None
        await self.cache.adopt(prepared.cache.fingerprint)
        result = await self.cache.lookup(prepared.cache, vector)
        if trace is not None:
            trace.cache = result.status
            trace.cache_similarity = result.similarity
        return result

    async def _replay(self, prepared: Prepared, result: CacheResult, key: KeyRecord,
                      trace: RequestTrace | None) -> AsyncGenerator[Chunk, None]:
        """A cached answer, as a stream of word-sized chunks; charged to the key's buckets
        like a generation but without a decoding slot."""
        entry = result.entry
        assert entry is not None
        n_prompt = len(prepared.request.prompt_tokens)
        self.gate.limiter.admit(key, n_prompt, entry.completion_tokens).settle(
            n_prompt + entry.completion_tokens)
        if trace is not None:
            trace.mark_first_token()
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
                     trace: RequestTrace | None = None, *,
                     vector: Vector | None = None) -> AsyncGenerator[Chunk, None]:
        """Chunks as the engine releases text. Admission (rate limit, then a decoding slot
        from the bounded queue) happens before anything reaches the engine; the engine
        sequence is cancelled if the consumer stops early (client gone) or is cancelled.
        A response-cache hit is replayed instead (``vector``: the last user turn's
        embedding if the caller has one)."""
        self._llama()
        cached = await self._cache_lookup(prepared, trace, vector)
        if cached is not None and cached.entry is not None:
            async for piece in self._replay(prepared, cached, key, trace):
                yield piece
            return
        texts: list[str] = []
        request = prepared.request
        queued_at = time.perf_counter()
        ticket = await self.gate.admit(key, len(request.prompt_tokens), request.max_tokens)
        if trace is not None:
            trace.queue_wait_s = time.perf_counter() - queued_at
        used = len(request.prompt_tokens)
        handle = self.engine.submit(request)
        try:
            while True:
                for event in await handle.next_events():
                    if isinstance(event, TextDelta):
                        used = len(request.prompt_tokens) + event.n_tokens
                        if trace is not None:
                            trace.mark_first_token()
                        texts.append(event.text)
                        yield Chunk(event.text)
                    elif isinstance(event, Finished):
                        used = event.prompt_tokens + event.completion_tokens
                        if trace is not None:
                            trace.mark_first_token()
                            trace.prompt_tokens = event.prompt_tokens
                            trace.completion_tokens = event.completion_tokens
                            trace.cached_tokens = event.cached_tokens
                        final = self._final(event)
                        texts.append(final.text)
                        if cached is not None and self.cache is not None and \
                                prepared.cache is not None and final.usage is not None:
                            await self.cache.store(
                                prepared.cache, cached.vector, "".join(texts),
                                final.finish_reason or "", final.usage.prompt_tokens,
                                final.usage.completion_tokens)
                        if prepared.memory is not None and final.usage is not None:
                            await self._remember(prepared, "".join(texts))
                            final = dataclasses.replace(final, usage=dataclasses.replace(
                                final.usage, memory_tokens=prepared.memory_tokens))
                            if trace is not None:
                                trace.memory_tokens = prepared.memory_tokens
                        yield final
                        return
        finally:
            handle.cancel()
            ticket.release(used)

    async def complete(self, prepared: Prepared, key: KeyRecord,
                       trace: RequestTrace | None = None) -> Generation:
        parts = [prepared.echo_text] if prepared.echo_text else []
        async for chunk in self.stream(prepared, key, trace):
            parts.append(chunk.text)
            if chunk.finish_reason is not None and chunk.usage is not None:
                return Generation("".join(parts), chunk.finish_reason, chunk.usage)
        raise InternalError("the generation ended without a result")

    def _final(self, event: Finished) -> Chunk:
        if event.reason == "error":
            raise InternalError(f"generation failed: {event.error}")
        if event.reason == "cancelled":
            raise Unavailable("the generation was cancelled because the server is stopping")
        usage = Usage(event.prompt_tokens, event.completion_tokens, event.cached_tokens)
        return Chunk(event.text, _public_reason(event.reason), usage)
