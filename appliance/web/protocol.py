"""aiohttp's HTTP/1.1 protocol as the appliance runs it: requests its parser refuses are
answered in the OpenAI error shape, and logged without their bytes.

A request aiohttp cannot parse (a bad request line or method, a malformed or oversized
header, bad chunked framing) never reaches the application or its middlewares: the
protocol object (``web_protocol.RequestHandler``) answers it itself in ``handle_error``,
as ``text/plain`` quoting the offending bytes, and logs it at error level on
``aiohttp.server`` with those bytes in the exception. That method is the one place to
change it, so the server runs a subclass of the protocol:

- ``_Protocol.handle_error`` renders the refusal with the middleware's ``error_response``
  (``MalformedRequest``, a 400 whose message and code say what kind of framing was wrong,
  from the exception's class alone: never its message, which quotes the request), and
  logs one line at info level naming only the kind and the peer.
- ``_Protocol.log_exception`` does the same for the other client-caused errors aiohttp
  logs with a traceback (a body that failed to decode, read again after the response).
  Everything else (a real bug) is logged with its traceback as before.

aiohttp builds the protocol objects from ``web.Server``, and ``web.AppRunner`` builds the
``web.Server`` in ``_make_server``: ``Runner`` overrides that one method (after the
application has started exactly as before) to return a ``web.Server`` whose protocol
factory makes ``_Protocol``. Alternatives that do not work: a ``request_factory`` (the
refusal never calls the application's handler), ``on_response_prepare`` (not sent for a
request that matched no route), a logging filter (fixes the log, not the response);
patching ``RequestHandler`` itself would change it for every aiohttp server in the process.

``http_error`` maps the same exceptions for the application (``read_json``: a gzip body
that does not decompress, a chunked body cut short, a body shorter than its
Content-Length).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from aiohttp import http_exceptions as hx
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from appliance.errors import InternalError, MalformedRequest, RequestError, Unavailable
from appliance.web.middleware import REQUEST_ID, error_response

log = logging.getLogger("appliance.http")

# (exception class, code, message), most specific first; the message never quotes bytes.
_KINDS: tuple[tuple[type[Exception], str, str], ...] = (
    (hx.LineTooLong, "line_too_long",
     "the request line or a header is longer than the server accepts"),
    (hx.BadHttpMethod, "invalid_method",
     "the request method is not an HTTP method (TLS sent to a plain-HTTP port?)"),
    (hx.InvalidURLError, "invalid_url", "the request target is not a valid URL"),
    (hx.BadStatusLine, "invalid_request_line", "the request line is not HTTP/1.x"),
    (hx.InvalidHeader, "invalid_header", "a request header is malformed"),
    (hx.ContentEncodingError, "invalid_content_encoding",
     "the request body does not decode as its Content-Encoding says"),
    (hx.TransferEncodingError, "invalid_chunked_encoding",
     "the chunked request body is malformed"),
    (hx.ContentLengthError, "incomplete_body",
     "the request body ended before its Content-Length"),
    (hx.HttpProcessingError, "malformed_request",
     "the request is not valid HTTP/1.1 (request line, headers or body framing)"),
)


def http_error(exc: BaseException) -> MalformedRequest:
    """The OpenAI-shaped 400 for a request (or body) aiohttp refused; ``exc`` is the
    parser's exception or a ``web.RequestPayloadError`` caused by one."""
    if isinstance(exc, web.RequestPayloadError) and exc.__cause__ is not None:
        exc = exc.__cause__
    for kind, code, message in _KINDS:
        if isinstance(exc, kind):
            return MalformedRequest(message, code=code)
    return MalformedRequest("the request body could not be read", code="unreadable_body")


def _client_caused(exc: object) -> bool:
    return isinstance(exc, hx.HttpProcessingError | web.RequestPayloadError)


class _Protocol(RequestHandler):
    __slots__ = ()

    def handle_error(self, request: BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        err: RequestError
        if _client_caused(exc):
            assert exc is not None
            err = http_error(exc)
            log.info("refused a malformed request from %s: %s", request.remote, err.code)
        else:  # a handler bug or a timeout, not the client: keep aiohttp's traceback
            self.log_exception("Error handling request from %s", request.remote,
                               exc_info=exc)
            err = (Unavailable("the request timed out") if status == 504 else
                   InternalError("internal error; see the server log"))
        if request.writer.output_size > 0:  # as aiohttp: too late for another response
            raise ConnectionError("the response had already started")
        response = error_response(err)
        response.headers[REQUEST_ID] = uuid.uuid4().hex
        response.force_close()
        return response

    def log_exception(self, *args: Any, **kw: Any) -> None:
        exc = kw.get("exc_info")
        if _client_caused(exc):
            assert isinstance(exc, BaseException)
            log.info("a request body failed to decode: %s", http_error(exc).code)
            return
        super().log_exception(*args, **kw)


class _Server(web.Server):
    """``web.Server`` whose connections are served by ``_Protocol``."""

    def __init__(self, made: web.Server, protocol_args: dict[str, Any]) -> None:
        super().__init__(made.request_handler, request_factory=made.request_factory,
                         handler_cancellation=made.handler_cancellation, **protocol_args)
        self._protocol_args = protocol_args
        self._protocol_loop = asyncio.get_running_loop()

    def __call__(self) -> RequestHandler:
        return _Protocol(self, loop=self._protocol_loop, **self._protocol_args)


class Runner(web.AppRunner):
    """``web.AppRunner`` serving ``app`` with the appliance's protocol. ``protocol_args``
    go to each connection's protocol, as ``web.AppRunner``'s keyword arguments do."""

    def __init__(self, app: web.Application, *, handler_cancellation: bool,
                 **protocol_args: Any) -> None:
        super().__init__(app, handler_cancellation=handler_cancellation, **protocol_args)
        self._protocol_args = protocol_args

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()  # starts the application, as before
        return _Server(made, self._protocol_args)
