"""Prepare a request into a :class:`~appliance.pipeline.job.Job`, before admission.

In order: the model's route (404 for a name nobody serves); the input rail's rules tier on
every message (so everything after it, the model, memory, the cache and the logs, sees the
redacted text; a rule block costs nothing more), naming the system and tool messages for
the injection check that follows; memory injection; for ``auto``, the model by the rule
(:mod:`appliance.routing.auto`); then the prompt in the form its engine takes: for the
embedded engine the answer's shape (tools, response format: see ``tool_stage``), the chat
template and the tokens (with the length limits); for an upstream the messages or text
(it applies its own template; the size is estimated until its usage says); the cache
query. Nothing here waits for a decoding slot.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid

from appliance.api.requests import ChatRequest, CompletionRequest, GenerationOptions, Prompt
from appliance.engine.chat import ChatMessage
from appliance.engine.estimate import estimate_chat, estimate_text
from appliance.engine.tokenizer import Tokenizer
from appliance.engine.types import GenerationRequest, TextPrompt
from appliance.errors import ContextLengthExceeded, InvalidRequest, Unavailable
from appliance.guards.rails import PolicyRails, RulesStage
from appliance.pipeline.cache_stage import CacheStage
from appliance.pipeline.input_stage import InputStage
from appliance.pipeline.job import Job, Kind, RequestContext
from appliance.pipeline.memory_stage import Injected, MemoryStage
from appliance.pipeline.tool_stage import Grammars, plan_chat
from appliance.routing.auto import AutoHints
from appliance.routing.catalog import Catalog, Route

_BIG_PROMPT_CHARS = 16_384  # tokenise larger prompts off the event loop


class Preparer:
    def __init__(self, catalog: Catalog, inputs: InputStage, *, tokenizer: Tokenizer | None,
                 ctx_size: int, memory: MemoryStage | None = None,
                 cache: CacheStage | None = None, max_n: int = 1) -> None:
        self.catalog = catalog
        self._max_n = max_n  # choices per prompt (at most the decoding slots)
        self._tokenizer = tokenizer
        self._inputs = inputs
        self._ctx_size = ctx_size
        self._memory = memory
        self._cache = cache
        self._grammars = Grammars()

    async def chat(self, req: ChatRequest, ctx: RequestContext) -> Job:
        route = self._route(req.options.model)  # None: "auto", decided below
        if route is not None and route.embedded:
            self._local().template()  # a missing template or a loading model: fail early
        messages = req.messages
        rails = self._inputs.rails_for(ctx.key)
        rules = None
        if rails is not None:
            users = [i for i, m in enumerate(messages) if m.role == "user"]
            main = users[-1] if users else len(messages) - 1
            # Besides the last user turn, the input rail checks for injections what a tool
            # fetched and the system prompts (which may hold pasted documents).
            tools = [i for i, m in enumerate(messages) if m.role == "tool"]
            system = [i for i, m in enumerate(messages) if m.role == "system"]
            rules = self._inputs.rules(rails, [m.content for m in messages], main, ctx.trace,
                                       tools, system=system)
            messages = tuple(m if text == m.content else dataclasses.replace(m, content=text)
                             for m, text in zip(messages, rules.texts, strict=True))
        exact = route is not None and route.embedded
        injected = (await self._memory.inject(messages, ctx.key, ctx.user, ctx.session_id,
                                              exact=exact)
                    if self._memory is not None else Injected(messages, None, 0))
        if route is None:
            main_text = rules.texts[rules.main] if rules is not None else messages[-1].content
            route = await self._auto(req.options, estimate_chat(injected.messages),
                                     main_text, rails)
        if route.embedded:
            job = await self._embedded_chat(req, route, injected.messages, rails, rules)
        else:
            _refuse_upstream(req.options, route, structured="tools" if req.tools is not None
                             else "response_format" if req.response_format is not None
                             else None)
            job = self._upstream_job("chat", route, TextPrompt(injected.messages),
                                     estimate_chat(injected.messages), req.options,
                                     rails=rails, rules=rules)
        job = dataclasses.replace(job, memory=injected.context, memory_tokens=injected.tokens)
        return self._with_cache(job, ctx, injected.messages)

    async def completions(self, req: CompletionRequest, ctx: RequestContext) -> list[Job]:
        """A job for each prompt, in order."""
        return [await self.completion(req, ctx, prompt) for prompt in req.prompts]

    async def completion(self, req: CompletionRequest, ctx: RequestContext,
                         prompt: Prompt | None = None) -> Job:
        """The job of ``prompt`` (default: the request's first)."""
        route = self._route(req.options.model)
        prompt = req.prompts[0] if prompt is None else prompt
        ids: list[int] = []
        if isinstance(prompt, str):
            text: str | None = prompt
            echo = prompt
        else:
            if route is None or not route.embedded:
                raise InvalidRequest("a prompt of token ids is only taken for the embedded "
                                     "model (other prompts pass the guards as text)",
                                     param="prompt")
            ids = list(prompt)
            n_vocab = self._local().n_vocab
            bad = [t for t in ids if not 0 <= t < n_vocab]
            if bad:
                raise InvalidRequest(f"token id {bad[0]} is outside the vocabulary "
                                     f"(0..{n_vocab - 1})", param="prompt")
            text = None
            echo = self._local().detokenize(ids)
        rails = self._inputs.rails_for(ctx.key)
        rules = None
        if rails is not None:
            rules = self._inputs.rules(rails, [echo], 0, ctx.trace)
            if rules.texts[0] != echo:  # redacted: the model sees the masked text
                text = echo = rules.texts[0]
        if route is None:
            route = await self._auto(req.options, estimate_text(echo), echo, rails)
        echo_text = echo if req.echo else ""
        if not route.embedded:
            _refuse_upstream(req.options, route, structured=None)
            return self._with_cache(self._upstream_job(
                "text", route, TextPrompt(text=echo), estimate_text(echo), req.options,
                echo_text=echo_text, default_max=16, rails=rails, rules=rules), ctx, ())
        tokens = await self._tokenize(text) if text is not None else ids
        job = dataclasses.replace(
            self._job("text", route, tokens, req.options, echo_text=echo_text,
                      default_max=16, rails=rails, rules=rules), prompt_chars=len(echo))
        return self._with_cache(job, ctx, ())

    async def _embedded_chat(self, req: ChatRequest, route: Route,
                             messages: tuple[ChatMessage, ...], rails: PolicyRails | None,
                             rules: RulesStage | None) -> Job:
        """The answer's shape, the template and the tokens of a chat for this engine."""
        template = self._local().template()
        plan = await plan_chat(req, messages, template, self._grammars)
        tokens = await self._tokenize_chat(template.render_parts(plan.messages, plan.tools))
        job = self._job("chat", route, tokens, req.options, rails=rails, rules=rules,
                        grammar=plan.grammar)
        return dataclasses.replace(job, calls=plan.calls, shape=plan.key)

    # --- routes -------------------------------------------------------------------------
    def _route(self, name: str) -> Route | None:
        return None if self.catalog.is_auto(name) else self.catalog.resolve(name)

    async def _auto(self, options: GenerationOptions, n_prompt: int, main_text: str,
                    rails: PolicyRails | None) -> Route:
        """``auto``: the model by the rule; a routing topic is embedded off the loop."""
        topic = None
        if rails is not None and rails.topics.routes:
            topic = await asyncio.to_thread(rails.topics.routed, main_text)
        return self.catalog.choose(AutoHints(n_prompt, options.structured, topic))

    def _local(self) -> Tokenizer:
        if self._tokenizer is None:
            raise Unavailable("no embedded engine runs on this server")
        return self._tokenizer

    # --- the embedded engine's prompt ---------------------------------------------------
    async def _tokenize_chat(self, parts: list[tuple[str, bool]]) -> list[int]:
        if sum(len(text) for text, _ in parts) > _BIG_PROMPT_CHARS:
            return await asyncio.to_thread(self._local().tokenize_chat, parts)
        return self._local().tokenize_chat(parts)

    async def _tokenize(self, text: str) -> list[int]:
        if len(text) > _BIG_PROMPT_CHARS:
            return await asyncio.to_thread(self._local().tokenize_text, text)
        return self._local().tokenize_text(text)

    def _job(self, kind: Kind, route: Route, tokens: list[int], options: GenerationOptions,
             *, echo_text: str = "", default_max: int | None = None,
             rails: PolicyRails | None = None, rules: RulesStage | None = None,
             grammar: str | None = None) -> Job:
        n_prompt = len(tokens)
        if n_prompt == 0:
            raise InvalidRequest("the prompt is empty", param="prompt")
        n_vocab = self._local().n_vocab
        for token, _ in options.logit_bias:
            if token >= n_vocab:
                raise InvalidRequest(f"'logit_bias' token id {token} is outside the "
                                     f"vocabulary (0..{n_vocab - 1})", param="logit_bias")
        if options.n > self._max_n:
            raise InvalidRequest(f"'n' must be at most {self._max_n} on this server (the "
                                 f"max_n setting, at most the parallel slots)", param="n")
        max_tokens = self._max_tokens(kind, n_prompt, options.max_tokens, default_max)
        request = GenerationRequest(prompt_tokens=tuple(tokens), max_tokens=max_tokens,
                                    sampling=options.sampling, stop=options.stop,
                                    ignore_eos=options.ignore_eos, logprobs=options.logprobs,
                                    grammar=grammar,
                                    checked=rails is not None and rails.classifies_output)
        return Job(id=_id(kind), created=int(time.time()), kind=kind, request=request,
                   options=options, route=route, echo_text=echo_text, rails=rails,
                   rules=rules)

    def _max_tokens(self, kind: Kind, n_prompt: int, asked: int | None,
                    default_max: int | None) -> int:
        """``max_tokens`` left out: up to the end of the context (chat) or ``default_max``;
        a prompt, or a prompt plus ``max_tokens``, beyond the context is a 400."""
        room = self._ctx_size - n_prompt
        if room < 1:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {self._ctx_size} tokens. However, "
                f"your messages resulted in {n_prompt} tokens. Please reduce the length of "
                f"the messages.", param="messages" if kind == "chat" else "prompt")
        if asked is None:
            return min(default_max or room, room)
        if n_prompt + asked > self._ctx_size:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {self._ctx_size} tokens. However, "
                f"you requested {n_prompt + asked} tokens ({n_prompt} in the prompt, "
                f"{asked} in the completion). Please reduce the length of the prompt "
                f"or max_tokens.", param="max_tokens")
        return asked

    # --- an upstream's prompt -----------------------------------------------------------
    @staticmethod
    def _upstream_job(kind: Kind, route: Route, prompt: TextPrompt, estimate: int,
                      options: GenerationOptions, *, echo_text: str = "",
                      default_max: int | None = None, rails: PolicyRails | None = None,
                      rules: RulesStage | None = None) -> Job:
        """The upstream applies its template and limits; ``max_tokens`` left out is the
        engine's ``max_tokens`` (or ``default_max``)."""
        if not (prompt.messages or prompt.text):
            raise InvalidRequest("the prompt is empty", param="prompt")
        max_tokens = options.max_tokens or default_max or route.max_tokens or 16
        request = GenerationRequest(prompt_tokens=(), max_tokens=max_tokens,
                                    sampling=options.sampling, stop=options.stop,
                                    ignore_eos=options.ignore_eos, text=prompt,
                                    model=route.model)
        return Job(id=_id(kind), created=int(time.time()), kind=kind, request=request,
                   options=options, route=route, echo_text=echo_text, rails=rails,
                   rules=rules, prompt_estimate=max(1, estimate))

    def _with_cache(self, job: Job, ctx: RequestContext,
                    messages: tuple[ChatMessage, ...]) -> Job:
        if self._cache is None:
            return job
        return dataclasses.replace(job, cache=self._cache.query(job, ctx, messages))


def _id(kind: Kind) -> str:
    return ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]


def _refuse_upstream(options: GenerationOptions, route: Route, *,
                     structured: str | None) -> None:
    """What only the embedded engine does yet: the upstream path relays text, so several
    choices, log-probabilities, tools and enforced formats (``structured``: the field that
    asks for one) are a clear 400 there."""
    asked = [name for name, on in (("n", options.n > 1),
                                   ("logprobs", options.logprobs is not None),
                                   (structured or "", structured is not None)) if on]
    if asked:
        raise InvalidRequest(
            f"'{asked[0]}' is not supported for the model {route.model!r}, which an upstream "
            f"engine serves (tools, response formats, n and logprobs run on the embedded "
            f"model only)", param=asked[0], code="unsupported_parameter")
