"""CORS: which browser origins may call the API (the ``cors_origins`` setting; off when empty).

A preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) is answered
by :func:`cors_middleware` before authentication, since browsers send it without the key:
204 with the methods and the headers asked for when the origin is allowed, else 403 in the
OpenAI error shape. Every other response to an allowed origin, errors and streams included,
carries ``Access-Control-Allow-Origin`` and exposes the appliance's own headers
(:meth:`CorsPolicy.headers`, added where every response gets its headers).
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler

from appliance.errors import PermissionDenied

_METHODS = "GET, POST, PATCH, DELETE, OPTIONS"
_EXPOSED = ", ".join((
    "X-Request-Id", "X-Cache", "X-Cache-Similarity", "Retry-After",
    *(f"x-ratelimit-{what}-{of}" for what in ("limit", "remaining", "reset")
      for of in ("requests", "tokens"))))
_MAX_AGE = "600"


@dataclass(frozen=True)
class CorsPolicy:
    origins: frozenset[str]  # exact origins ("https://app.example.org"); empty: CORS off
    any_origin: bool = False  # "*": every origin

    @classmethod
    def parse(cls, setting: str) -> CorsPolicy:
        origins = {o.strip().rstrip("/") for o in setting.split(",") if o.strip()}
        return cls(frozenset(origins - {"*"}), "*" in origins)

    @property
    def enabled(self) -> bool:
        return self.any_origin or bool(self.origins)

    def allows(self, origin: str) -> bool:
        return self.any_origin or origin in self.origins

    def headers(self, origin: str | None) -> dict[str, str]:
        """Headers of an actual (not preflight) response to a request from ``origin``."""
        if not self.enabled:
            return {}
        if origin is None or not self.allows(origin):
            return {"Vary": "Origin"}
        return {"Access-Control-Allow-Origin": origin, "Vary": "Origin",
                "Access-Control-Expose-Headers": _EXPOSED}

    def preflight(self, origin: str, request_headers: str | None) -> web.Response:
        if not self.allows(origin):
            raise PermissionDenied(
                f"the origin {origin!r} may not call this server from a browser; add it to "
                f"the cors_origins setting", code="cors_origin_not_allowed")
        headers = {"Access-Control-Allow-Origin": origin,
                   "Access-Control-Allow-Methods": _METHODS, "Access-Control-Max-Age": _MAX_AGE,
                   "Vary": "Origin, Access-Control-Request-Headers"}
        if request_headers:
            headers["Access-Control-Allow-Headers"] = request_headers
        return web.Response(status=204, headers=headers)


CORS = web.AppKey("cors", CorsPolicy)


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answers preflights (inside the error renderer, before authentication)."""
    origin = request.headers.get("Origin")
    if (request.method == "OPTIONS" and origin is not None
            and "Access-Control-Request-Method" in request.headers):
        policy = request.app[CORS]
        if policy.enabled:
            return policy.preflight(origin,
                                    request.headers.get("Access-Control-Request-Headers"))
    return await handler(request)
