"""The response cache's and memory's HTTP surface: ``Cache-Control`` and ``X-Cache-Scope`` in,
``X-Cache`` and ``X-Cache-Similarity`` out.

- ``Cache-Control: no-cache``: do not answer from the cache (the answer is still stored);
  ``no-store``: do not store the answer. Both may be given.
- ``X-Cache-Scope: global``: store the answer in the global scope, served to every key
  (an FAQ). Only keys with the ``admin`` scope may ask; others get 403.
- ``X-Session-Id`` (or a ``session_id`` body field): the memory session of a chat request.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from appliance.admission.gate import Gate
from appliance.admission.keys import Scope
from appliance.api.requests import MAX_SESSION_CHARS, session_value
from appliance.cache.response import CacheDirectives
from appliance.errors import InvalidRequest
from appliance.observability.trace import RequestTrace
from appliance.web.openapi import Param
from appliance.web.state import KEY

X_CACHE = "X-Cache"
X_CACHE_SIMILARITY = "X-Cache-Similarity"
X_CACHE_SCOPE = "X-Cache-Scope"
X_SESSION_ID = "X-Session-Id"

# The headers chat and completion requests read (for the OpenAPI document).
GENERATION_HEADERS = (
    Param("Cache-Control", "header", {"type": "string"},
          description="no-cache: skip the cache lookup; no-store: do not store the answer"),
    Param(X_CACHE_SCOPE, "header", {"enum": ["private", "global"]},
          description="global: store for every key (admin keys only)"),
    Param(X_SESSION_ID, "header", {"type": "string", "maxLength": MAX_SESSION_CHARS},
          description="the memory session (or a session_id body field)"),
)


def cache_directives(request: web.Request) -> CacheDirectives:
    tokens = {t.strip().lower().split("=")[0]
              for t in request.headers.get("Cache-Control", "").split(",")}
    scope = request.headers.get(X_CACHE_SCOPE, "").strip().lower()
    if scope not in ("", "private", "global"):
        raise InvalidRequest(f"{X_CACHE_SCOPE} must be 'private' or 'global'",
                             param=X_CACHE_SCOPE)
    if scope == "global":
        Gate.require(request[KEY], Scope.ADMIN)
    return CacheDirectives(no_cache="no-cache" in tokens, no_store="no-store" in tokens,
                           shared=scope == "global")


def session_id(request: web.Request, body: Any) -> str | None:
    """The memory session of a chat request: ``X-Session-Id`` or the body's
    ``session_id``."""
    return session_value(request.headers.get(X_SESSION_ID) or (
        body.get("session_id") if isinstance(body, dict) else None))


def cache_headers(trace: RequestTrace) -> dict[str, str]:
    if trace.cache is None:
        return {}
    headers = {X_CACHE: trace.cache}
    if trace.cache_similarity is not None:
        headers[X_CACHE_SIMILARITY] = f"{trace.cache_similarity:.4f}"
    return headers
