"""Prepare a request into a :class:`~appliance.pipeline.job.Job`, before admission.

In order: the model check; the input rail's rules tier on every message (so everything after
it, the model, memory, the cache and the logs, sees the redacted text; a rule block costs
nothing more), naming the system and tool messages for the injection check that follows;
memory injection; the answer's shape (tools, response format: see ``tool_stage``); the chat
template; the prompt's tokens; the length limits; the cache query. Nothing here waits for
a decoding slot.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid

from appliance.api.requests import ChatRequest, CompletionRequest, GenerationOptions, Prompt
from appliance.engine.chat import ChatMessage
from appliance.engine.models import ServedModel
from appliance.engine.tokenizer import Tokenizer
from appliance.engine.types import GenerationRequest
from appliance.errors import ContextLengthExceeded, InvalidRequest
from appliance.guards.rails import PolicyRails, RulesStage
from appliance.pipeline.cache_stage import CacheStage
from appliance.pipeline.input_stage import InputStage
from appliance.pipeline.job import Job, Kind, RequestContext
from appliance.pipeline.memory_stage import Injected, MemoryStage
from appliance.pipeline.tool_stage import Grammars, plan_chat

_BIG_PROMPT_CHARS = 16_384  # tokenise larger prompts off the event loop
# Texts the input rail checks for injections besides the last user turn: a system prompt
# may hold pasted documents, a tool result is whatever the tool fetched.
UNTRUSTED_ROLES = frozenset({"system", "tool"})


class Preparer:
    def __init__(self, served: ServedModel, tokenizer: Tokenizer, inputs: InputStage, *,
                 ctx_size: int, memory: MemoryStage | None = None,
                 cache: CacheStage | None = None, max_n: int = 1) -> None:
        self._served = served
        self._max_n = max_n  # choices per prompt (at most the decoding slots)
        self._tokenizer = tokenizer
        self._inputs = inputs
        self._ctx_size = ctx_size
        self._memory = memory
        self._cache = cache
        self._grammars = Grammars()

    async def chat(self, req: ChatRequest, ctx: RequestContext) -> Job:
        self._served.check(req.options.model)
        template = self._tokenizer.template()
        messages = req.messages
        rails = self._inputs.rails_for(ctx.key)
        rules = None
        if rails is not None:
            users = [i for i, m in enumerate(messages) if m.role == "user"]
            main = users[-1] if users else len(messages) - 1
            untrusted = [i for i, m in enumerate(messages) if m.role in UNTRUSTED_ROLES]
            rules = self._inputs.rules(rails, [m.content for m in messages], main, ctx.trace,
                                       untrusted)
            messages = tuple(m if text == m.content else dataclasses.replace(m, content=text)
                             for m, text in zip(messages, rules.texts, strict=True))
        injected = (await self._memory.inject(messages, ctx.key, ctx.user, ctx.session_id)
                    if self._memory is not None else Injected(messages, None, 0))
        plan = await plan_chat(req, injected.messages, template, self._grammars)
        tokens = await self._tokenize_chat(template.render_parts(plan.messages, plan.tools))
        job = dataclasses.replace(
            self._job("chat", tokens, req.options, rails=rails, rules=rules,
                      grammar=plan.grammar),
            memory=injected.context, memory_tokens=injected.tokens, calls=plan.calls,
            shape=plan.key)
        return self._with_cache(job, ctx, injected.messages)

    async def completions(self, req: CompletionRequest, ctx: RequestContext) -> list[Job]:
        """A job for each prompt, in order."""
        return [await self.completion(req, ctx, prompt) for prompt in req.prompts]

    async def completion(self, req: CompletionRequest, ctx: RequestContext,
                         prompt: Prompt | None = None) -> Job:
        """The job of ``prompt`` (default: the request's first)."""
        self._served.check(req.options.model)
        prompt = req.prompts[0] if prompt is None else prompt
        ids: list[int] = []
        if isinstance(prompt, str):
            text: str | None = prompt
            echo = prompt
        else:
            ids = list(prompt)
            n_vocab = self._tokenizer.n_vocab
            bad = [t for t in ids if not 0 <= t < n_vocab]
            if bad:
                raise InvalidRequest(f"token id {bad[0]} is outside the vocabulary "
                                     f"(0..{n_vocab - 1})", param="prompt")
            text = None
            echo = self._tokenizer.detokenize(ids)
        rails = self._inputs.rails_for(ctx.key)
        rules = None
        if rails is not None:
            rules = self._inputs.rules(rails, [echo], 0, ctx.trace)
            if rules.texts[0] != echo:  # redacted: the model sees the masked text
                text = echo = rules.texts[0]
        tokens = await self._tokenize(text) if text is not None else ids
        job = dataclasses.replace(
            self._job("text", tokens, req.options, echo_text=echo if req.echo else "",
                      default_max=16, rails=rails, rules=rules), prompt_chars=len(echo))
        return self._with_cache(job, ctx, ())

    async def _tokenize_chat(self, parts: list[tuple[str, bool]]) -> list[int]:
        if sum(len(text) for text, _ in parts) > _BIG_PROMPT_CHARS:
            return await asyncio.to_thread(self._tokenizer.tokenize_chat, parts)
        return self._tokenizer.tokenize_chat(parts)

    async def _tokenize(self, text: str) -> list[int]:
        if len(text) > _BIG_PROMPT_CHARS:
            return await asyncio.to_thread(self._tokenizer.tokenize_text, text)
        return self._tokenizer.tokenize_text(text)

    def _job(self, kind: Kind, tokens: list[int], options: GenerationOptions, *,
             echo_text: str = "", default_max: int | None = None,
             rails: PolicyRails | None = None, rules: RulesStage | None = None,
             grammar: str | None = None) -> Job:
        n_prompt = len(tokens)
        if n_prompt == 0:
            raise InvalidRequest("the prompt is empty", param="prompt")
        n_vocab = self._tokenizer.n_vocab
        for token, _ in options.logit_bias:
            if token >= n_vocab:
                raise InvalidRequest(f"'logit_bias' token id {token} is outside the "
                                     f"vocabulary (0..{n_vocab - 1})", param="logit_bias")
        if options.n > self._max_n:
            raise InvalidRequest(f"'n' must be at most {self._max_n} on this server (the "
                                 f"max_n setting, at most the parallel slots)", param="n")
        max_tokens = self._max_tokens(kind, n_prompt, options.max_tokens, default_max)
        rid = ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]
        request = GenerationRequest(prompt_tokens=tuple(tokens), max_tokens=max_tokens,
                                    sampling=options.sampling, stop=options.stop,
                                    ignore_eos=options.ignore_eos, logprobs=options.logprobs,
                                    grammar=grammar)
        return Job(id=rid, created=int(time.time()), kind=kind, request=request,
                   options=options, echo_text=echo_text, rails=rails, rules=rules)

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

    def _with_cache(self, job: Job, ctx: RequestContext,
                    messages: tuple[ChatMessage, ...]) -> Job:
        if self._cache is None:
            return job
        return dataclasses.replace(job, cache=self._cache.query(job, ctx, messages))
