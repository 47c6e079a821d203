"""Hostile and sloppy requests a generator rarely produces, sent as raw bytes to the real
server with keys: each gets its exact 4xx in the OpenAI error shape, as JSON, without
echoing the request's bytes, and nothing a malformed request carried reaches the log.

The first cases are the 500s found before: a list or dict as a message role, a
Content-Encoding body that does not decode, a memory id beyond SQLite's INTEGER, a key of
non-UTF-8 bytes (on every /v1 route, with and without keys in the database).
"""

from __future__ import annotations

import gzip
import json
import logging
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web

from appliance.observability.logs import JsonFormatter
from appliance.web.app import ROUTES
from tests.conftest import RunningServer
from tests.e2e._raw_http import RawResponse, exchange, request
from tests.e2e.conftest import KeyedServer

MARKER = "jane.doe.4711@example.org"  # PII a malformed request carries
CHAT, COMPLETIONS, EMBEDDINGS = "/v1/chat/completions", "/v1/completions", "/v1/embeddings"
HI = [{"role": "user", "content": "hi"}]
NON_UTF8_KEY = b"Bearer sk-appl-" + b"\xff\xfe" * 21 + b"\x80"  # a key's length, not UTF-8


def _j(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def _chat(**fields: Any) -> bytes:
    return _j({"model": "default", "messages": HI, "max_tokens": 1, **fields})


def _embed(**fields: Any) -> bytes:
    return _j({"model": "default", "input": "hi", **fields})


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[str], bytes | list[bytes]]  # the chat key -> bytes (or parts)
    status: int
    code: str | None = None
    param: str | None = None


def _post(path: str, body: bytes, **kw: Any) -> Callable[[str], bytes]:
    return lambda key: request("POST", path, body, key=key, **kw)


def _call(method: str, path: str, body: bytes = b"", **kw: Any) -> Callable[[str], bytes]:
    return lambda key: request(method, path, body, key=key, **kw)


def _raw(data: bytes) -> Callable[[str], bytes]:
    return lambda key: data.replace(b"KEY", key.encode())


def _parts(*parts: bytes) -> Callable[[str], list[bytes]]:
    return lambda key: [p.replace(b"KEY", key.encode()) for p in parts]


_CHUNKED_HEAD = (b"POST /v1/embeddings HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer KEY\r\n"
                 b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                 b"Connection: close\r\n\r\n")
_EMBED = _embed()
_FORCED = {"max_tokens": 8, "tools": [{"type": "function", "function": {
    "name": "weather", "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}}, "required": ["city"]}}}],
    "tool_choice": {"type": "function", "function": {"name": "weather"}}}
_M = MARKER.encode()

CASES = [
    # The 500s found before.
    Case("role-list", _post(CHAT, _chat(messages=[{"role": ["user"], "content": "x"}])), 400,
         param="messages[0].role"),
    Case("role-dict", _post(CHAT, _chat(messages=[{"role": {"user": 1}, "content": "x"}])),
         400, param="messages[0].role"),
    Case("role-number", _post(CHAT, _chat(messages=[{"role": 5, "content": "x"}])), 400,
         param="messages[0].role"),
    Case("gzip-garbage", _post(CHAT, b"not gzip " + _M,
                               headers={"Content-Encoding": "gzip"}), 400,
         code="invalid_content_encoding"),
    Case("deflate-garbage", _post(EMBEDDINGS, b"not deflate " + _M,
                                  headers={"Content-Encoding": "deflate"}), 400,
         code="invalid_content_encoding"),
    Case("gzip-truncated", _post(EMBEDDINGS, gzip.compress(_EMBED)[:-12],
                                 headers={"Content-Encoding": "gzip"}), 400),
    Case("delete-id-past-int64", _call("DELETE", "/v1/memory/9223372036854775808"), 400,
         param="id"),
    Case("patch-id-past-int64", _call("PATCH", "/v1/memory/9223372036854775808",
                                      _j({"pinned": True})), 400, param="id"),
    Case("delete-id-negative", _call("DELETE", "/v1/memory/-1"), 400, param="id"),
    Case("delete-id-zero", _call("DELETE", "/v1/memory/0"), 400, param="id"),
    Case("delete-id-word", _call("DELETE", "/v1/memory/abc"), 400, param="id"),
    Case("delete-id-float", _call("DELETE", "/v1/memory/1e3"), 400, param="id"),
    Case("delete-id-huge", _call("DELETE", "/v1/memory/" + "9" * 5000), 400, param="id"),
    Case("delete-id-arabic-digits", _call("DELETE", "/v1/memory/%D9%A1%D9%A2"), 400,
         param="id"),
    Case("delete-id-underscore", _call("DELETE", "/v1/memory/1_000"), 400, param="id"),
    Case("delete-id-int64-max", _call("DELETE", "/v1/memory/9223372036854775807"), 404,
         code="not_found"),
    Case("patch-id-past-int64-bad-body", _call("PATCH", "/v1/memory/99999999999999999999",
                                               b"[]"), 400),
    # Sampling values at float32's edge. A 5e-324 repeat penalty (0 in float32) made a
    # forced tool call's draw land outside its grammar, which aborted the process.
    Case("repeat-penalty-denormal", _post(CHAT, _chat(repeat_penalty=5e-324, **_FORCED)), 400,
         param="repeat_penalty"),
    Case("repeat-penalty-least", _post(CHAT, _chat(repeat_penalty=0.01, **_FORCED)), 200),
    Case("temperature-denormal", _post(CHAT, _chat(temperature=1e-45, **_FORCED)), 200),
    Case("top-p-denormal", _post(CHAT, _chat(top_p=5e-324, **_FORCED)), 200),
    Case("completion-empty-prompt", _post(COMPLETIONS, _j({"model": "default", "prompt": "",
                                                           "max_tokens": 1})), 400,
         param="prompt"),
    # Compressed bodies that do decode are fine.
    Case("gzip-valid", _post(EMBEDDINGS, gzip.compress(_EMBED),
                             headers={"Content-Encoding": "gzip"}), 200),
    Case("deflate-valid", _post(EMBEDDINGS, zlib.compress(_EMBED),
                                headers={"Content-Encoding": "deflate"}), 200),
    # JSON that is not what it should be.
    Case("deep-array", _post(CHAT, b"[" * 30_000 + b"]" * 30_000), 400),
    Case("deep-object-as-model", _post(CHAT, b'{"model": ' + b'{"a": ' * 500 + b"1"
                                       + b"}" * 500 + b', "messages": []}'), 400,
         param="model"),
    Case("deep-content", _post(CHAT, _chat(messages=[{"role": "user", "content": json.loads(
        "[" * 900 + "]" * 900)}])), 400, param="messages[0].content"),
    Case("max-tokens-1e400", _post(CHAT, b'{"model": "default", "messages": [], '
                                         b'"max_tokens": 1e400}'), 400),
    Case("max-tokens-huge-negative", _post(CHAT, _chat(max_tokens=-10**20)), 400,
         param="max_tokens"),
    Case("seed-2-64", _post(CHAT, _chat(seed=2**64)), 400, param="seed"),
    Case("seed-10-40", _post(CHAT, _chat(seed=10**40)), 400),
    Case("temperature-1e308", _post(CHAT, _chat(temperature=1e308)), 400,
         param="temperature"),
    Case("top-k-1e20", _post(CHAT, _chat(top_k=1e20)), 400, param="top_k"),
    Case("logit-bias-19-digits", _post(CHAT, _chat(logit_bias={"9" * 19: 1})), 400,
         param="logit_bias"),
    Case("logit-bias-signed", _post(CHAT, _chat(logit_bias={"+5": 1})), 400,
         param="logit_bias"),
    Case("prompt-token-2-63", _post(COMPLETIONS, _j({"model": "default", "prompt": [2**63],
                                                    "max_tokens": 1})), 400, param="prompt"),
    Case("prompt-token-1e300", _post(COMPLETIONS, _j({"model": "default", "prompt": [1e300],
                                                     "max_tokens": 1})), 400, param="prompt"),
    Case("prompt-token-negative", _post(COMPLETIONS, _j({"model": "default", "prompt": [-1],
                                                        "max_tokens": 1})), 400,
         param="prompt"),
    Case("embeddings-dimensions-1e30", _post(EMBEDDINGS, _embed(dimensions=1e30)), 400,
         param="dimensions"),
    Case("nan", _post(CHAT, _chat()[:-1] + b', "temperature": NaN}'), 400),
    Case("infinity", _post(CHAT, _chat()[:-1] + b', "temperature": Infinity}'), 400),
    Case("minus-infinity", _post(CHAT, _chat()[:-1] + b', "top_p": -Infinity}'), 400),
    Case("duplicate-keys-last-wrong", _post(CHAT, b'{"model": "default", "model": 5, '
                                                  b'"messages": [{"role": "user"}]}'), 400,
         param="model"),
    Case("truncated", _post(EMBEDDINGS, _EMBED[:-5]), 400),
    Case("invalid-utf8", _post(EMBEDDINGS, b'{"model": "default", "input": "\xe9\xff"}'), 400),
    Case("raw-control-char-in-string", _post(EMBEDDINGS, b'{"model": "default", '
                                                        b'"input": "a\x00b"}'), 400),
    Case("nul-escape-in-string", _post("/v1/guard", _j({"input": "a\u0000b"})), 200),
    # Content types: the body is read as JSON whatever the header says (curl -d sends a
    # form type); what is not JSON is a 400.
    Case("text-plain-json", _post(EMBEDDINGS, _EMBED, content_type="text/plain"), 200),
    Case("no-content-type", _post(EMBEDDINGS, _EMBED, content_type=None), 200),
    Case("form-body", _post(EMBEDDINGS, b"model=default&input=hi",
                            content_type="application/x-www-form-urlencoded"), 400),
    Case("multipart-body", _post(EMBEDDINGS, b"--x\r\nContent-Disposition: form-data; "
                                 b'name="input"\r\n\r\nhi\r\n--x--\r\n',
                                 content_type="multipart/form-data; boundary=x"), 400),
    Case("latin1-charset", _post(EMBEDDINGS, b'{"model": "default", "input": "caf\xe9"}',
                                 content_type="application/json; charset=latin-1"), 400),
    # Framing: Content-Length, chunks.
    Case("content-length-word", _raw(b"POST /v1/embeddings HTTP/1.1\r\nHost: a\r\n"
                                     b"Content-Length: " + _M + b"\r\n\r\n{}"), 400),
    Case("content-length-negative", _raw(b"POST /v1/embeddings HTTP/1.1\r\nHost: a\r\n"
                                         b"Content-Length: -1\r\n\r\n{}"), 400),
    Case("content-length-twice", _raw(b"POST /v1/embeddings HTTP/1.1\r\nHost: a\r\n"
                                      b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}"),
         400),
    Case("content-length-and-chunked", _raw(b"POST /v1/embeddings HTTP/1.1\r\nHost: a\r\n"
                                            b"Content-Length: 2\r\nTransfer-Encoding: "
                                            b"chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"), 400),
    Case("chunked-valid", _raw(_CHUNKED_HEAD + f"{len(_EMBED):x}".encode() + b"\r\n" + _EMBED
                               + b"\r\n0\r\n\r\n"), 200),
    Case("chunked-bad-size", _raw(_CHUNKED_HEAD + b"zz\r\n" + _M + b"\r\n0\r\n\r\n"), 400),
    Case("chunked-huge-size", _raw(_CHUNKED_HEAD + b"ffffffffffffffffffff\r\n{}\r\n"), 400),
    Case("chunked-no-crlf", _raw(_CHUNKED_HEAD + b"2\r\n{}XX0\r\n\r\n"), 400),
    Case("transfer-encoding-unknown", _raw(b"POST /v1/embeddings HTTP/1.1\r\nHost: a\r\n"
                                           b"Transfer-Encoding: " + _M + b"\r\n\r\n{}"), 400),
    # Methods.
    Case("put-chat", _call("PUT", CHAT, _chat()), 405, code="method_not_allowed"),
    Case("delete-health", _call("DELETE", "/health"), 405, code="method_not_allowed"),
    Case("options-models", _call("OPTIONS", "/v1/models"), 405),
    Case("trace-ready", _call("TRACE", "/ready"), 405),
    Case("patch-openapi", _call("PATCH", "/openapi.json", b"{}"), 405),
    Case("get-chat", _call("GET", CHAT), 405),
    Case("made-up-method", _call("BREW", "/v1/models"), 400, code="invalid_method"),
    Case("lower-case-method", _call("get", "/v1/models"), 400),
    Case("tls-client-hello", _raw(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + _M), 400),
    Case("http2-preface", _raw(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 400),
    Case("http-version-9", _raw(b"GET /v1/models HTTP/9.9\r\nHost: a\r\n\r\n"), 400),
    Case("garbage-request-line", _raw(b"GET /health " + _M + b" HTTP/1.1\r\n\r\n"), 400),
    # Sizes.
    Case("url-9000", _call("GET", "/v1/models?q=" + "a" * 9000), 400, code="line_too_long"),
    Case("path-8000-unknown", _call("GET", "/v1/" + "a" * 8000), 404),
    Case("header-value-9000", _call("GET", "/health", headers={"X-Note": MARKER * 400}), 400,
         code="line_too_long"),
    Case("200-headers", _call("GET", "/health",
                              headers={f"X-H{i}": MARKER for i in range(200)}), 400),
    Case("key-8000", _call("GET", "/v1/models", headers={"Authorization": "Bearer " +
                                                         "a" * 8000}), 401),
    Case("body-over-max", _post(EMBEDDINGS, _embed(input="x" * 70_000)), 413,
         code="request_too_large"),
    # NUL and control bytes.
    Case("nul-in-path", _raw(b"GET /v1/mo\x00dels HTTP/1.1\r\nHost: a\r\n\r\n"), 400),
    Case("nul-in-header", _raw(b"GET /health HTTP/1.1\r\nHost: a\r\nX-Note: a\x00" + _M
                               + b"\r\n\r\n"), 400),
    Case("escaped-nul-in-path", _call("GET", "/v1/mo%00dels"), 404),
    Case("escaped-nul-in-query", _call("GET", "/v1/memory?scope=user&user=%00"), 200),
    Case("cr-in-header", _raw(b"GET /health HTTP/1.1\r\nHost: a\r\nX-Note: a\rb\r\n\r\n"),
         400),
    Case("bare-lf-lines", _raw(b"GET /health HTTP/1.1\nHost: a\n\n"), 400),
    # The appliance's own headers.
    Case("session-id-300", _post(CHAT, _chat(), headers={"X-Session-Id": "s" * 300}), 400,
         param="session_id"),
    Case("session-id-non-utf8", _post(CHAT, _chat(), headers={"X-Session-Id": b"\xff\xfe"}),
         400, param="session_id"),
    Case("cache-control-non-utf8", _post(EMBEDDINGS, _EMBED,
                                         headers={"Cache-Control": b"no-\xff"}), 200),
    Case("cache-scope-non-utf8", _post(CHAT, _chat(), headers={"X-Cache-Scope": b"\xff"}),
         400, param="X-Cache-Scope"),
    Case("query-non-utf8", _call("GET", "/v1/memory?scope=user&user=%FF%FE"), 200),
    Case("path-non-utf8", _call("DELETE", "/v1/memory/%FF"), 400, param="id"),
    Case("cache-scope-bogus", _post(CHAT, _chat(), headers={"X-Cache-Scope": "everyone"}),
         400, param="X-Cache-Scope"),
    Case("cache-scope-global-not-admin", _post(CHAT, _chat(),
                                               headers={"X-Cache-Scope": "global"}), 403),
    Case("request-id-non-utf8", _call("GET", "/health",
                                      headers={"X-Request-Id": b"\xff\xfe" + _M}), 200),
]


def _assert_openai_error(resp: RawResponse, status: int) -> dict[str, Any]:
    assert resp.status == status, resp
    assert resp.headers.get("content-type", "").startswith("application/json"), resp
    body = resp.json()
    error = body["error"]
    assert set(body) == {"error"}
    assert {"message", "type", "param", "code"} <= set(error) <= {
        "message", "type", "param", "code", "guard", "category"}, error
    assert isinstance(error["message"], str) and error["message"]
    assert "Traceback" not in error["message"]
    assert resp.headers.get("x-request-id")
    return dict(error)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_request_gets_its_4xx(keyed_server: KeyedServer, case: Case) -> None:
    responses = exchange(keyed_server.server.settings.port, case.build(keyed_server.chat))
    assert responses, "no response at all"
    resp = responses[0]
    assert resp.status < 500, resp
    assert MARKER.encode() not in resp.body  # never echoed
    if case.status < 400:
        assert resp.status == case.status, resp
        return
    error = _assert_openai_error(resp, case.status)
    if case.code is not None:
        assert error["code"] == case.code, error
    if case.param is not None:
        assert error["param"] == case.param, error


V1_ROUTES = sorted({(r.method, r.path.replace("{id}", "1")) for table in ROUTES for r in table
                    if isinstance(r, web.RouteDef) and r.path.startswith("/v1/")})


@pytest.mark.parametrize(("method", "path"), V1_ROUTES, ids=[f"{m} {p}" for m, p in V1_ROUTES])
def test_a_non_utf8_key_is_a_401_on_every_v1_route(keyed_server: KeyedServer, method: str,
                                                    path: str) -> None:
    responses = exchange(keyed_server.server.settings.port, request(
        method, path, b"{}", headers={"Authorization": NON_UTF8_KEY}))
    error = _assert_openai_error(responses[0], 401)
    assert error["type"] == "authentication_error"


@pytest.mark.parametrize(("method", "path"), V1_ROUTES, ids=[f"{m} {p}" for m, p in V1_ROUTES])
def test_a_non_utf8_key_without_keys_is_no_5xx(server: RunningServer, method: str,
                                                path: str) -> None:
    """No keys in the database, loopback: the header is not looked at (open access)."""
    responses = exchange(server.settings.port, request(
        method, path, b"{}", headers={"Authorization": NON_UTF8_KEY}))
    assert 200 <= responses[0].status < 500, responses[0]


POSTS = sorted({r.path for table in ROUTES for r in table
                if isinstance(r, web.RouteDef) and r.method == "POST"})
NOT_OBJECTS = [b"", b"[1]", b'"text"', b"1", b"null", b"true", b"  ", b"{"]


@pytest.mark.parametrize("path", POSTS)
def test_a_body_that_is_not_an_object_is_a_400_on_every_post(keyed_server: KeyedServer,
                                                            path: str) -> None:
    # (the admin routes check the scope before the body: they are sent with the admin key)
    key = keyed_server.admin if path.startswith("/v1/admin/") else keyed_server.chat
    for body in NOT_OBJECTS:
        responses = exchange(keyed_server.server.settings.port,
                             request("POST", path, body, key=key))
        _assert_openai_error(responses[0], 400)


def test_content_length_shorter_than_the_body(keyed_server: KeyedServer) -> None:
    """The declared length is the body; what follows is parsed as the next request, which is
    not HTTP (aiohttp then answers only that refusal, in the OpenAI shape)."""
    data = request("POST", EMBEDDINGS, _embed(input=MARKER), key=keyed_server.chat,
                   headers={"Content-Length": "5", "Connection": "keep-alive"})
    responses = exchange(keyed_server.server.settings.port, data, timeout=10)
    assert responses
    for resp in responses:
        _assert_openai_error(resp, 400)
    assert MARKER.encode() not in b"".join(r.body for r in responses)


def test_chunked_body_that_turns_malformed_later(keyed_server: KeyedServer) -> None:
    """A bad chunk in a later packet than the headers: aiohttp's parser drops the body
    without failing it, so the request waits for a body that never comes (until a body
    read timeout, or the client leaves). No 5xx, nothing echoed, the server serves on."""
    port = keyed_server.server.settings.port
    head = _CHUNKED_HEAD.replace(b"KEY", keyed_server.chat.encode())
    responses = exchange(port, [head + b"5\r\n{\"mod\r\n", b"zz\r\n" + _M + b"\r\n"],
                         timeout=3)
    assert all(400 <= r.status < 500 and _M not in r.body for r in responses), responses
    health = exchange(port, request("GET", "/health"))
    assert health[0].status == 200


def test_content_length_longer_than_the_body(keyed_server: KeyedServer) -> None:
    """The server waits for the rest; a client that gives up gets nothing, and the server
    goes on serving."""
    data = request("POST", EMBEDDINGS, _embed(), key=keyed_server.chat,
                   headers={"Content-Length": "500"})
    assert exchange(keyed_server.server.settings.port, data, timeout=1.5) == []
    assert exchange(keyed_server.server.settings.port, data, half_close=True,
                    timeout=5) == []  # EOF mid-body: the connection is simply closed
    health = exchange(keyed_server.server.settings.port, request("GET", "/health"))
    assert health[0].status == 200


def test_malformed_requests_leave_no_trace_in_the_log(keyed_server: KeyedServer,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """aiohttp logs a request its parser refuses with the offending bytes at error level;
    the appliance logs the kind of refusal and nothing of the request."""
    port = keyed_server.server.settings.port
    malformed = [
        b"GET /v1/models?who=" + _M + b" HTTP/1.1 extra\r\nHost: a\r\n\r\n",
        b"GE\x01T /" + _M + b" HTTP/1.1\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: a\r\nBad Header " + _M + b"\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: a\r\nX-Long: " + _M * 400 + b"\r\n\r\n",
        _CHUNKED_HEAD.replace(b"KEY", keyed_server.chat.encode()) + b"zz" + _M + b"\r\n",
        request("POST", EMBEDDINGS, b"\x1f\x8b" + _M, key=keyed_server.chat,
                headers={"Content-Encoding": "gzip"}),
    ]
    with caplog.at_level(logging.DEBUG):
        for data in malformed:
            responses = exchange(port, data)
            assert responses and responses[0].status == 400
            assert _M not in responses[0].body
        time.sleep(0.5)  # the server thread's last log lines
    formatter = JsonFormatter()
    logged = "\n".join(formatter.format(r) for r in caplog.records)
    assert "refused a malformed request" in logged  # the refusals were logged...
    assert MARKER not in logged  # ...without the request's bytes
    assert MARKER.split("@")[0] not in logged
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], logged
