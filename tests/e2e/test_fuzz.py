"""A property-based fuzz of the whole HTTP surface, generated from the server's own
``/openapi.json`` by schemathesis (conforming and mutated requests: bodies, query, path
and headers), against the real server with keys, each request sent with one of several
credentials (the chat key, the lab key, the admin key, an embeddings-only key, none, a
wrong key, a key of non-UTF-8 bytes).

Asserted for every response: no 5xx; an error is JSON in the OpenAI shape with a 4xx that
the document lists for the operation; a success is a status and media type the document
lists. Afterwards the server is healthy (``/health`` 200, a chat served through the
official client). The request count and the status table are printed (``-s`` shows them).

Generation stays cheap: a generation request asks for at most 4 tokens (the fuzz lowers a
larger ``max_tokens`` and sets one where none is given), on a 512-token context.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import openai
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from appliance.api.requests import as_int
from tests.e2e.conftest import KeyedServer

# Examples per operation and mode. 31 operations x (20 + 30): ~1,500 requests, each
# generation capped at 4 tokens: about two minutes on a 2-core machine.
EXAMPLES = {GenerationMode.POSITIVE: 20, GenerationMode.NEGATIVE: 30}
MAX_TOKENS = 4
GENERATING = {"/v1/chat/completions", "/v1/completions", "/v1/responses"}
ERROR_KEYS = {"message", "type", "param", "code"}
CONTENT_FILTER_KEYS = {"guard", "category"}


def _credentials(keyed: KeyedServer) -> dict[str, str | bytes | None]:
    return {
        "chat": f"Bearer {keyed.chat}", "lab": f"Bearer {keyed.lab}",
        "admin": f"Bearer {keyed.admin}",
        "embed-only": f"Bearer {keyed.embed_only}", "none": None,
        "wrong": "Bearer sk-appl-" + "x" * 43, "not-bearer": f"Basic {keyed.chat}",
        "non-utf8": b"Bearer sk-appl-" + b"\xff\xfe" * 21 + b"\x80",
    }


# Mostly a working key, so that most requests reach the parsers (and, with the lab key's
# policy, generated text that the classifiers would block reaches the model).
WHO = st.sampled_from(["chat"] * 3 + ["lab"] * 4 + ["admin"] * 2
                      + ["embed-only", "none", "wrong", "not-bearer", "non-utf8"])


@dataclass
class Tally:
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    codes: Counter[tuple[str, int, str]] = field(default_factory=Counter)  # errors' codes
    failures: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.statuses.values())

    def table(self) -> str:
        by_status: Counter[int] = Counter()
        for (_, status), n in self.statuses.items():
            by_status[status] += n
        lines = [f"{self.total} requests; by status: "
                 + ", ".join(f"{s}: {n}" for s, n in sorted(by_status.items()))]
        lines += [f"  {op:32} {status}: {n}" for (op, status), n in sorted(self.statuses.items())]
        lines += ["error codes:"] + [f"  {op:32} {status} {code}: {n}"
                                     for (op, status, code), n in sorted(self.codes.items())]
        return "\n".join(lines)


def _prepare(case: Any, served_model: bool) -> None:
    """``served_model``: name the served model (a generated string names none, so the
    request would end in a 404 before the pipeline). Then at most MAX_TOKENS generated
    tokens; whatever else the case holds is left alone."""
    body = case.body
    if not isinstance(body, dict):
        return
    if served_model and isinstance(body.get("model"), str):
        body["model"] = "default"
    if case.operation.path not in GENERATING:
        return
    given_any = False
    for name in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        value = as_int(body.get(name))
        if value is not None:
            given_any = True
            if value > MAX_TOKENS:
                body[name] = MAX_TOKENS
        elif body.get(name) is not None:
            given_any = True  # a wrong type: the parser refuses it, nothing is generated
    if not given_any:
        body["max_output_tokens" if case.operation.path == "/v1/responses"
             else "max_tokens"] = MAX_TOKENS


def _code(response: schemathesis.Response) -> str:
    try:
        error = response.json()["error"]
        return f"{error['code'] or error['type']} ({error['param']})"
    except (ValueError, KeyError, TypeError):
        return "?"


def _check(response: schemathesis.Response, documented: set[str]) -> str | None:
    """What is wrong with ``response`` (headers: lower-case names, lists), or None."""
    status = response.status_code
    media = response.headers.get("content-type", [""])[0].split(";")[0]
    if status >= 500:
        return f"{status} {response.text[:300]}"
    if str(status) not in documented:
        return f"status {status} is not in the document ({sorted(documented)})"
    if status < 400:
        return None
    if media != "application/json":
        return f"{status} with Content-Type {media!r}"
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return f"{status} body is not an OpenAI error: {response.text[:200]}"
    keys = set(error)
    extra = keys - ERROR_KEYS - (CONTENT_FILTER_KEYS if error.get("code") ==
                                 "content_filter" else set())
    if not keys >= ERROR_KEYS or extra:
        return f"{status} error has keys {sorted(keys)}"
    if not isinstance(error["message"], str) or not error["message"]:
        return f"{status} error without a message"
    if not (isinstance(error["type"], str) and all(
            v is None or isinstance(v, str) for v in (error["param"], error["code"]))):
        return f"{status} error fields of the wrong type: {error}"
    return None


def _fuzz_operation(keyed: KeyedServer, operation: Any, mode: GenerationMode,
                    session: requests.Session, tally: Tally) -> None:
    credentials = _credentials(keyed)
    documented = set(operation.definition.raw["responses"])
    label = f"{operation.method.upper()} {operation.path}"

    @settings(max_examples=EXAMPLES[mode], deadline=None, database=None,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode), who=WHO,
           served_model=st.sampled_from([True, True, True, False]))
    def one(case: Any, who: str, served_model: bool) -> None:
        _prepare(case, served_model)
        response = case.call(base_url=keyed.base_url, session=session, timeout=120,
                             headers={"Authorization": credentials[who]})
        tally.statuses[(label, response.status_code)] += 1
        if response.status_code >= 400:
            tally.codes[(label, response.status_code, _code(response))] += 1
        problem = _check(response, documented)
        if problem is not None:
            tally.failures.append(f"{label} [{mode.value}, {who}] {problem}\n"
                                  f"    {case.as_curl_command()[:600]}")

    try:
        one()
    except Unsatisfiable:  # nothing to mutate: no body, query, path or header parameters
        assert mode is GenerationMode.NEGATIVE and not operation.definition.raw.get(
            "parameters") and "requestBody" not in operation.definition.raw, label


def _fuzz(keyed: KeyedServer, schema: Any, tally: Tally) -> None:
    session = requests.Session()
    for result in schema.get_all_operations():
        for mode in EXAMPLES:
            _fuzz_operation(keyed, result.ok(), mode, session, tally)


@pytest.mark.timeout(900)  # a few minutes on a quiet 2-core machine; CI may be slower
def test_no_5xx_and_openai_errors_for_generated_requests(keyed_server: KeyedServer) -> None:
    doc = requests.get(keyed_server.base_url + "/openapi.json", timeout=30)
    assert doc.status_code == 200 and doc.headers["Content-Type"].startswith(
        "application/json")
    schema = schemathesis.openapi.from_dict(doc.json())
    tally = Tally()
    started = time.monotonic()
    _fuzz(keyed_server, schema, tally)
    print(f"\nfuzz: {time.monotonic() - started:.0f} s\n{tally.table()}")
    assert not tally.failures, (f"{len(tally.failures)} bad responses:\n"
                                + "\n".join(tally.failures[:30]))
    assert tally.total >= 500
    # Not vacuous: requests reached the handlers and were served, and parsers refused some.
    codes = {status for (_, status) in tally.statuses}
    assert 200 in codes and 400 in codes and 401 in codes
    for path in GENERATING:  # the model generated for some of them
        assert tally.statuses[(f"POST {path}", 200)] > 0, path

    health = requests.get(keyed_server.base_url + "/health", timeout=30)
    assert health.status_code == 200 and health.json()["status"] in ("ok", "degraded")
    client = openai.OpenAI(base_url=keyed_server.base_url + "/v1", api_key=keyed_server.chat,
                           max_retries=0)
    reply = client.chat.completions.create(
        model="default", messages=[{"role": "user", "content": "Say hello."}], max_tokens=4)
    assert reply.choices[0].message.content
