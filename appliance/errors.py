"""The appliance's one error tree.

Each class carries its HTTP status and its OpenAI ``type``/``code``; the web layer renders
every one of them in one place as ``{"error": {"message", "type", "param", "code"}}``.
Nobody parses exception messages.

    ApplianceError
    ├── ConfigError                  (start-up; not an HTTP error)
    ├── ModelError                   (start-up: missing, corrupt or unloadable model)
    └── RequestError                 (answered to a client)
        ├── InvalidRequest             400 invalid_request_error
        │   ├── ContextLengthExceeded    400 code=context_length_exceeded
        │   ├── ChatTemplateMissing      400 code=chat_template_missing
        │   ├── ContentFiltered          400 code=content_filter (names the guard)
        │   └── MalformedRequest         400 not HTTP/1.1 or an unreadable body (code says
        │                                    which; the request's bytes are never echoed)
        ├── AuthenticationError        401
        ├── PermissionDenied           403
        ├── NotFound                   404
        │   └── ModelNotFound            404 code=model_not_found
        ├── MethodNotAllowed           405
        ├── RequestTimeout             408 (the body did not arrive in time)
        ├── PayloadTooLarge            413
        ├── UnsupportedMediaType       415
        ├── RateLimited                429 (carries Retry-After)
        ├── InternalError              500
        ├── BadGateway                 502 code=bad_gateway (an upstream engine failed)
        ├── Unavailable                503 (carries Retry-After)
        │   ├── NotReady                 503 code=model_not_ready
        │   └── Overloaded               503 type=server_overloaded
        └── GatewayTimeout             504 code=gateway_timeout (an upstream engine too slow)

An upstream engine's failures are mapped into this tree by ``appliance.upstream``: its own
messages, address and key never reach a client.
"""

from __future__ import annotations


class ApplianceError(Exception):
    """Base of every error the appliance raises on purpose."""


class ConfigError(ApplianceError):
    """A setting or a config file is wrong; raised at start-up."""


class ModelError(ApplianceError):
    """A model file is missing, fails its sha256 pin, or cannot be loaded."""


class RequestError(ApplianceError):
    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.retry_after = retry_after

    def body(self) -> dict[str, object]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(RequestError):
    status = 400
    type = "invalid_request_error"


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"


class ChatTemplateMissing(InvalidRequest):
    code = "chat_template_missing"


class ContentFiltered(InvalidRequest):
    """A guard blocked the input. Names which guard and category fired, nothing more (no
    scores, no other verdicts)."""

    code = "content_filter"

    def __init__(self, message: str, *, guard: str, category: str | None,
                 param: str = "messages") -> None:
        super().__init__(message, param=param)
        self.guard = guard
        self.category = category

    def body(self) -> dict[str, object]:
        body = super().body()
        error = body["error"]
        assert isinstance(error, dict)
        error["guard"] = self.guard
        error["category"] = self.category
        return body


class MalformedRequest(InvalidRequest):
    """The request's framing, not its JSON, is wrong: aiohttp's parser refused the request
    line, a header, the chunked encoding or the Content-Encoding."""

    code = "malformed_request"


class AuthenticationError(RequestError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(RequestError):
    status = 403
    type = "permission_error"
    code = "insufficient_scope"


class NotFound(RequestError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class MethodNotAllowed(RequestError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class RequestTimeout(RequestError):
    status = 408
    type = "invalid_request_error"
    code = "request_timeout"


class PayloadTooLarge(RequestError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class UnsupportedMediaType(RequestError):
    status = 415
    type = "invalid_request_error"
    code = "unsupported_media_type"


class RateLimited(RequestError):
    status = 429
    type = "rate_limit_exceeded"
    code = "rate_limit_exceeded"
    kind = "requests"  # the limit hit, for metrics: "requests" | "tokens" | "concurrency"


class InternalError(RequestError):
    status = 500
    type = "server_error"
    code = "internal_error"


class BadGateway(RequestError):
    """An upstream engine could not be reached or answered with an error of its own."""

    status = 502
    type = "server_error"
    code = "bad_gateway"


class GatewayTimeout(RequestError):
    """An upstream engine sent nothing for longer than its read timeout."""

    status = 504
    type = "server_error"
    code = "gateway_timeout"


class Unavailable(RequestError):
    status = 503
    type = "server_error"
    code = "unavailable"


class NotReady(Unavailable):
    code = "model_not_ready"


class Overloaded(Unavailable):
    type = "server_overloaded"
    code = "server_overloaded"
