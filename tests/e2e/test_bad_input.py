"""Bad input: every case gets its documented 4xx in the OpenAI error shape, never a 500."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.conftest import RunningServer

CHAT = "/v1/chat/completions"
OK_MESSAGES = [{"role": "user", "content": "hi"}]


def _send(server: RunningServer, path: str, body: bytes | None, method: str = "POST",
          headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any], dict[str, str]]:
    req = urllib.request.Request(server.base_url + path, data=body, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read()), dict(r.headers)
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, json.loads(raw), dict(exc.headers)


def _j(obj: Any) -> bytes:
    return json.dumps(obj).encode()


CASES: list[tuple[str, str, bytes | None, int, str | None, str | None]] = [
    # id, path, body, status, code, param
    ("malformed-json", CHAT, b'{"model": "default", "messages": [', 400, None, None),
    ("invalid-utf8", CHAT,
     b'{"model": "default", "messages": [{"role": "user", "content": "\xff\xfe"}]}',
     400, None, None),
    ("empty-body", CHAT, b"", 400, None, None),
    ("body-not-object", CHAT, _j([1, 2]), 400, None, None),
    ("missing-model", CHAT, _j({"messages": OK_MESSAGES}), 400, "missing_required_parameter",
     "model"),
    ("model-wrong-type", CHAT, _j({"model": 5, "messages": OK_MESSAGES}), 400, None, "model"),
    ("unknown-model", CHAT, _j({"model": "gpt-9", "messages": OK_MESSAGES}), 404,
     "model_not_found", "model"),
    ("manifest-model-not-loaded", CHAT, _j({"model": "gemma3-270m", "messages": OK_MESSAGES}),
     404, "model_not_found", "model"),
    ("missing-messages", CHAT, _j({"model": "default"}), 400, "missing_required_parameter",
     "messages"),
    ("empty-messages", CHAT, _j({"model": "default", "messages": []}), 400, None, "messages"),
    ("messages-not-list", CHAT, _j({"model": "default", "messages": "hi"}), 400, None,
     "messages"),
    ("bad-role", CHAT, _j({"model": "default", "messages": [{"role": "robot", "content": "x"}]}),
     400, None, "messages[0].role"),
    ("content-wrong-type", CHAT,
     _j({"model": "default", "messages": [{"role": "user", "content": 5}]}),
     400, None, "messages[0].content"),
    ("image-part", CHAT, _j({"model": "default", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:,"}}]}]}), 400, None,
     "messages[0].content"),
    ("temperature-string", CHAT, _j({"model": "default", "messages": OK_MESSAGES,
                                     "temperature": "hot"}), 400, None, "temperature"),
    ("temperature-range", CHAT, _j({"model": "default", "messages": OK_MESSAGES,
                                    "temperature": 3}), 400, None, "temperature"),
    ("top-p-zero", CHAT, _j({"model": "default", "messages": OK_MESSAGES, "top_p": 0}), 400,
     None, "top_p"),
    ("max-tokens-zero", CHAT, _j({"model": "default", "messages": OK_MESSAGES, "max_tokens": 0}),
     400, None, "max_tokens"),
    ("max-tokens-float", CHAT, _j({"model": "default", "messages": OK_MESSAGES,
                                   "max_tokens": 1.5}), 400, None, "max_tokens"),
    ("max-tokens-too-big", CHAT, _j({"model": "default", "messages": OK_MESSAGES,
                                     "max_tokens": 100000}), 400, "context_length_exceeded",
     "max_tokens"),
    ("n-zero", CHAT, _j({"model": "default", "messages": OK_MESSAGES, "n": 0}), 400, None, "n"),
    ("n-over-max", CHAT, _j({"model": "default", "messages": OK_MESSAGES, "n": 9}), 400, None,
     "n"),
    ("top-logprobs-too-many", CHAT, _j({"model": "default", "messages": OK_MESSAGES,
                                        "logprobs": True, "top_logprobs": 21}), 400, None,
     "top_logprobs"),
    ("top-logprobs-without-logprobs", CHAT, _j({"model": "default", "messages": OK_MESSAGES,
                                                "top_logprobs": 3}), 400, None, "top_logprobs"),
    ("stream-not-bool", CHAT, _j({"model": "default", "messages": OK_MESSAGES, "stream": "yes"}),
     400, None, "stream"),
    ("stream-options-without-stream", CHAT, _j({"model": "default", "messages": OK_MESSAGES,
                                                "stream_options": {"include_usage": True}}),
     400, None, "stream_options"),
    ("too-many-stops", CHAT, _j({"model": "default", "messages": OK_MESSAGES,
                                 "stop": ["a", "b", "c", "d", "e"]}), 400, None, "stop"),
    ("stop-wrong-type", CHAT, _j({"model": "default", "messages": OK_MESSAGES, "stop": 5}), 400,
     None, "stop"),
    ("logit-bias-bad-key", CHAT, _j({"model": "default", "messages": OK_MESSAGES,
                                     "logit_bias": {"abc": 1}}), 400, None, "logit_bias"),
    ("logit-bias-out-of-vocab", CHAT, _j({"model": "default", "messages": OK_MESSAGES,
                                          "logit_bias": {"99999999": 1}}), 400, None,
     "logit_bias"),
    ("seed-string", CHAT, _j({"model": "default", "messages": OK_MESSAGES, "seed": "x"}), 400,
     None, "seed"),
    ("schema-keyword-unsupported", CHAT, _j({
        "model": "default", "messages": OK_MESSAGES, "response_format": {
            "type": "json_schema", "json_schema": {"name": "x", "schema": {
                "type": "string", "pattern": "^a+$"}}}}), 400, "unsupported_schema",
     "response_format.json_schema.schema"),
    ("response-format-unknown", CHAT, _j({"model": "default", "messages": OK_MESSAGES,
                                          "response_format": {"type": "yaml"}}), 400, None,
     "response_format.type"),
    ("tool-choice-unknown-function", CHAT, _j({
        "model": "default", "messages": OK_MESSAGES,
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "tool_choice": {"type": "function", "function": {"name": "g"}}}), 400, None,
     "tool_choice"),
    ("tool-message-without-id", CHAT, _j({"model": "default", "messages": [
        *OK_MESSAGES, {"role": "tool", "content": "42"}]}), 400, None,
     "messages[1].tool_call_id"),
    ("functions-deprecated", CHAT, _j({"model": "default", "messages": OK_MESSAGES,
                                       "functions": [{"name": "f"}]}), 400,
     "unsupported_parameter", "functions"),
    ("completion-tools", "/v1/completions", _j({
        "model": "default", "prompt": "x",
        "tools": [{"type": "function", "function": {"name": "f"}}]}), 400,
     "unsupported_parameter", "tools"),
    ("prompt-too-long", CHAT, _j({"model": "default", "messages": [
        {"role": "user", "content": "word " * 1500}]}), 400, "context_length_exceeded",
     "messages"),
    ("completion-missing-prompt", "/v1/completions", _j({"model": "default"}), 400,
     "missing_required_parameter", "prompt"),
    ("completion-prompt-dict", "/v1/completions", _j({"model": "default", "prompt": {}}), 400,
     None, "prompt"),
    ("completion-bad-prompt-in-list", "/v1/completions", _j({"model": "default",
                                                             "prompt": ["a", 5]}), 400, None,
     "prompt"),
    ("completion-echo-logprobs", "/v1/completions", _j({"model": "default", "prompt": "a",
                                                        "echo": True, "logprobs": 2}), 400,
     "unsupported_parameter", "echo"),
    ("responses-tools", "/v1/responses", _j({"model": "default", "input": "hi", "tools": [
        {"type": "function", "name": "f"}]}), 400, "unsupported_parameter", "tools"),
    ("embeddings-token-out-of-vocab", "/v1/embeddings", _j({"model": "default",
                                                            "input": [[101, 10**7]]}), 400,
     None, "input"),
    ("completion-token-out-of-vocab", "/v1/completions", _j({"model": "default",
                                                             "prompt": [1, 10**9]}), 400, None,
     "prompt"),
    ("completion-empty-prompt-tokens", "/v1/completions", _j({"model": "default",
                                                              "prompt": []}), 400, None, "prompt"),
    ("too-large", CHAT, _j({"model": "default", "messages": [
        {"role": "user", "content": "x" * 300_000}]}), 413, "request_too_large", None),
    ("unknown-path", "/v1/nothing", _j({}), 404, None, None),
]


@pytest.mark.parametrize(("path", "body", "status", "code", "param"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gets_openai_error(server: RunningServer, path: str, body: bytes | None,
                                     status: int, code: str | None, param: str | None) -> None:
    got, payload, headers = _send(server, path, body)
    assert got == status, payload
    err = payload["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"]
    assert "Traceback" not in err["message"]
    assert err["type"] == "invalid_request_error"
    if code is not None:
        assert err["code"] == code
    if param is not None:
        assert err["param"] == param
    assert headers.get("X-Request-Id")


def test_wrong_method_is_405(server: RunningServer) -> None:
    status, payload, _ = _send(server, CHAT, None, method="GET")
    assert status == 405
    assert payload["error"]["code"] == "method_not_allowed"


def test_server_still_serves_after_bad_input(server: RunningServer) -> None:
    status, payload, _ = _send(server, CHAT, _j({"model": "default", "messages": OK_MESSAGES,
                                                 "max_tokens": 2}))
    assert status == 200
    assert payload["choices"][0]["message"]["role"] == "assistant"
