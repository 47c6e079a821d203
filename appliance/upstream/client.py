"""An upstream engine: one server speaking the OpenAI API, seen through the engine interface.

``submit`` returns an :class:`UpstreamStream`: iterating it posts the request (streamed),
parses the server's SSE chunks into ``TextDelta`` events and ends with one ``Finished``
carrying the server's ``usage`` (counted here when it sends none). ``cancel()`` closes the
HTTP connection, which is how the server learns the client left and frees its slot.

Failures raise in the appliance's error tree: the server unreachable, refusing or failing
(502 :class:`~appliance.errors.BadGateway`), busy (503 Overloaded), silent for longer than
``read_timeout_s`` (504 :class:`~appliance.errors.GatewayTimeout`), or refusing the request
as invalid (400). Messages never carry the server's address, key or own words.

``probe`` asks ``GET /v1/models``: a health check that also discovers the models of an
engine configured without a list.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from appliance.config_engines import EngineSettings
from appliance.engine.estimate import estimate_chat, estimate_text
from appliance.engine.types import Event, Finished, GenerationRequest, TextDelta
from appliance.errors import BadGateway, GatewayTimeout, RequestError
from appliance.upstream.http import HttpClient
from appliance.upstream.sse import sse_data
from appliance.upstream.wire import (
    MODELS_PATH,
    Usage,
    error_for,
    path_of,
    read_chunk,
    request_body,
)

log = logging.getLogger("appliance.upstream")
_ERROR_BODY_BYTES = 4096
_PROBE_READ_S = 5.0


class UpstreamEngine:
    def __init__(self, cfg: EngineSettings, http: HttpClient) -> None:
        self.cfg = cfg
        self._http = http
        self._discovered: tuple[str, ...] = ()
        self._headers = {"Authorization": f"Bearer {cfg.api_key}"} if cfg.api_key else {}
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=cfg.connect_timeout_s,
                                              sock_read=cfg.read_timeout_s)
        # A probe is a small GET: a server that cannot answer it in a few seconds is down
        # as far as routing is concerned, whatever its read timeout for generations.
        self._probe_timeout = aiohttp.ClientTimeout(
            total=cfg.connect_timeout_s + min(cfg.read_timeout_s, _PROBE_READ_S),
            sock_connect=cfg.connect_timeout_s)

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def remote(self) -> bool:
        return True

    @property
    def models(self) -> tuple[str, ...]:
        return self.cfg.models or self._discovered

    @property
    def max_tokens(self) -> int:
        return self.cfg.max_tokens

    def submit(self, request: GenerationRequest) -> UpstreamStream:
        return UpstreamStream(self, request)

    async def probe(self) -> tuple[str, ...]:
        """The models the server lists (remembered when none are configured); raises
        BadGateway (or GatewayTimeout) when it cannot answer."""
        try:
            async with self._http.session.get(self.cfg.url + MODELS_PATH,
                                              headers=self._headers,
                                              timeout=self._probe_timeout) as resp:
                if resp.status != 200:
                    raise error_for(resp.status, None, None)
                body = await resp.json(loads=orjson.loads, content_type=None)
        except RequestError:
            raise
        except Exception as exc:
            raise _transport_error(exc, self.name) from None
        data = body.get("data") if isinstance(body, dict) else None
        ids = tuple(row["id"] for row in data or () if isinstance(row, dict)
                    and isinstance(row.get("id"), str)) if isinstance(data, list) else ()
        if not self.cfg.models:
            self._discovered = ids
        return ids

    # --- one generation (UpstreamStream drives these) ---------------------------------------
    def open_stream(self, request: GenerationRequest) -> Any:
        return self._http.session.post(self.cfg.url + path_of(request),
                                       data=orjson.dumps(request_body(request)),
                                       headers={**self._headers,
                                                "Content-Type": "application/json"},
                                       timeout=self._timeout)


class UpstreamStream:
    def __init__(self, engine: UpstreamEngine, request: GenerationRequest) -> None:
        self.request = request
        self._engine = engine
        self._response: aiohttp.ClientResponse | None = None
        self._cancelled = False
        self._done = False

    def cancel(self) -> None:
        self._cancelled = True
        if self._response is not None and not self._done:
            self._response.close()  # the server sees the connection go and frees its slot

    async def __aiter__(self) -> AsyncIterator[Event]:
        if self._cancelled:
            return
        started = time.perf_counter()
        try:
            async with self._engine.open_stream(self.request) as resp:
                self._response = resp
                if resp.status != 200:
                    raise error_for(resp.status, await _error_body(resp),
                                    resp.headers.get("Retry-After"))
                async for event in self._events(resp, started):
                    yield event
        except RequestError:
            raise
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if self._cancelled:
                return
            raise _transport_error(exc, self._engine.name) from None
        finally:
            self.cancel()

    async def _events(self, resp: aiohttp.ClientResponse,
                      started: float) -> AsyncIterator[Event]:
        chat = self.request.text is not None and self.request.text.text is None
        n_tokens, first_at, reason = 0, None, None
        usage: Usage | None = None
        async for data in sse_data(resp.content):
            if data.strip() == "[DONE]":
                break
            try:
                chunk = read_chunk(orjson.loads(data), chat)
            except orjson.JSONDecodeError:
                raise BadGateway("the upstream engine sent a malformed stream") from None
            usage = chunk.usage or usage
            reason = chunk.finish_reason or reason
            if chunk.text:
                n_tokens += 1
                first_at = first_at or time.perf_counter()
                yield TextDelta(chunk.text, n_tokens)
        if reason is None:
            raise BadGateway("the upstream engine's stream ended before the answer did")
        self._done = True
        yield self._finished(reason, usage, n_tokens, (first_at or time.perf_counter()) -
                             started)

    def _finished(self, reason: str, usage: Usage | None, n_tokens: int,
                  prefill_s: float) -> Finished:
        if usage is None:  # a server that sends no usage: count and estimate
            prompt = self.request.text
            assert prompt is not None
            n_prompt = (estimate_text(prompt.text) if prompt.text is not None
                        else estimate_chat(prompt.messages))
            usage = Usage(n_prompt, n_tokens)
        return Finished("length" if reason == "length" else "stop", "", usage.prompt_tokens,
                        usage.completion_tokens, usage.cached_tokens, prefill_s)


async def _error_body(resp: aiohttp.ClientResponse) -> Any:
    with contextlib.suppress(Exception):
        return orjson.loads(await resp.content.read(_ERROR_BODY_BYTES))
    return None


def _transport_error(exc: BaseException, engine: str) -> RequestError:
    """A failure to talk to the server, as the client sees it (the kind in the log)."""
    log.warning("upstream %s: %s", engine, type(exc).__name__)
    if isinstance(exc, aiohttp.SocketTimeoutError | TimeoutError) and not isinstance(
            exc, aiohttp.ConnectionTimeoutError):
        return GatewayTimeout("the model's engine sent nothing for too long")
    return BadGateway("the model's engine could not be reached")
