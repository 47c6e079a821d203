"""The OpenAPI document: valid OpenAPI 3.1, exactly the application's routes, and request
schemas that agree with the parsers (every conforming body is accepted, every body
mutated against its schema is refused with a 400)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, Phase, assume, given, settings
from schemathesis import GenerationMode
from schemathesis.core.parameters import ParameterLocation

from appliance.api.embeddings import parse_embeddings
from appliance.api.guard import parse_guard
from appliance.api.memory import parse_memory_write, parse_pinned, parse_user
from appliance.api.requests import parse_chat, parse_completion
from appliance.api.responses import parse_responses
from appliance.errors import InvalidRequest
from appliance.guards.policy import presets
from appliance.web import openapi
from appliance.web.app import OPERATIONS, ROUTES

DOC = openapi.document(OPERATIONS)
METHODS = {"get", "post", "put", "patch", "delete", "head", "options", "trace"}


def _chat_rules(body: Any) -> None:
    """The rules between a chat body's fields that a JSON Schema cannot say (the document
    says them in ``description``): unique function names, a named ``tool_choice`` among
    them, ``required`` with tools, no ``logprobs`` with tools or a JSON format. Bodies
    breaking them are refused with a 400 (the e2e tests of tools and logprobs)."""
    tools = body.get("tools") or []
    names = [t["function"]["name"] for t in tools]
    choice = body.get("tool_choice")
    fmt = body.get("response_format") or {}
    assume(len(set(names)) == len(names))
    assume(choice != "required" or names)
    assume(not isinstance(choice, dict) or choice["function"]["name"] in names)
    assume(not body.get("logprobs") or not (names or fmt.get("type", "text") != "text"))


def _pin(body: Any) -> None:
    parse_pinned(body)
    parse_user(body)


PARSERS: dict[tuple[str, str], Callable[[Any], object]] = {
    ("POST", "/v1/chat/completions"): parse_chat,
    ("POST", "/v1/completions"): parse_completion,
    ("POST", "/v1/responses"): parse_responses,
    ("POST", "/v1/embeddings"): parse_embeddings,
    ("POST", "/v1/guard"): lambda body: parse_guard(body, presets()),
    ("POST", "/v1/memory"): parse_memory_write,
    ("PATCH", "/v1/memory/{id}"): _pin,
}

CROSS_FIELD_RULES: dict[tuple[str, str], Callable[[Any], None]] = {
    ("POST", "/v1/chat/completions"): _chat_rules,
}


def test_the_document_is_valid_openapi_3_1() -> None:
    assert DOC["openapi"].startswith("3.1")
    schemathesis.openapi.from_dict(DOC).validate()  # against the OpenAPI meta-schema


def test_a_broken_document_would_be_caught() -> None:
    broken = openapi.document(OPERATIONS)
    broken["paths"]["/health"]["get"]["responses"]["200"] = 5
    with pytest.raises(Exception, match="200"):
        schemathesis.openapi.from_dict(broken).validate()


def test_every_route_is_documented_and_every_documented_path_is_a_route() -> None:
    routes = {(r.method, r.path) for table in ROUTES for r in table
              if isinstance(r, web.RouteDef)}
    documented = {(method.upper(), path) for path, item in DOC["paths"].items()
                  for method in item if method in METHODS}
    assert routes, "no routes found"
    assert routes - documented == set(), "routes missing from the OpenAPI document"
    assert documented - routes == set(), "documented operations that are not routes"


def test_a_route_without_an_operation_fails_the_check() -> None:
    """The check above is not vacuous: one operation left out is one route missing."""
    partial = openapi.document(OPERATIONS[1:])
    documented = {(m.upper(), p) for p, item in partial["paths"].items() for m in item}
    assert (OPERATIONS[0].method, OPERATIONS[0].path) not in documented
    with pytest.raises(ValueError, match="twice"):
        openapi.document((*OPERATIONS, OPERATIONS[0]))


def test_every_error_response_is_the_openai_error_shape() -> None:
    error = DOC["components"]["schemas"]["Error"]
    assert error["properties"]["error"]["required"] == ["message", "type", "param", "code"]
    for path, item in DOC["paths"].items():
        for method, op in item.items():
            statuses = {int(s) for s in op["responses"]}
            # one success (200, or 201 for one that creates), and the errors every one has
            assert len([s for s in statuses if 200 <= s < 300]) == 1, (method, path)
            assert {400, 500} <= statuses, (method, path)
            for status, response in op["responses"].items():
                if int(status) >= 400:
                    ref = response["$ref"].rsplit("/", 1)[-1]
                    content = DOC["components"]["responses"][ref]["content"]
                    assert content["application/json"]["schema"] == {
                        "$ref": "#/components/schemas/Error"}
            if "requestBody" in op:
                assert "413" in op["responses"], (method, path)
            if path.startswith("/v1/"):
                assert {"401", "403"} <= set(op["responses"]), (method, path)


def _operation(method: str, path: str) -> Any:
    return schemathesis.openapi.from_dict(DOC)[path][method]


_SETTINGS = settings(max_examples=60, deadline=None, database=None,
                     phases=[Phase.generate], suppress_health_check=list(HealthCheck))


@pytest.mark.parametrize(("method", "path"), list(PARSERS), ids=[p for _, p in PARSERS])
def test_the_parser_accepts_every_body_its_schema_allows(method: str, path: str) -> None:
    parse = PARSERS[(method, path)]
    rules = CROSS_FIELD_RULES.get((method, path))

    @_SETTINGS
    @given(case=_operation(method, path).as_strategy(generation_mode=GenerationMode.POSITIVE))
    def accepted(case: Any) -> None:
        if rules is not None:
            rules(case.body)
        parse(case.body)

    accepted()


@pytest.mark.parametrize(("method", "path"), list(PARSERS), ids=[p for _, p in PARSERS])
def test_the_parser_refuses_every_body_its_schema_refuses(method: str, path: str) -> None:
    parse = PARSERS[(method, path)]
    refused = 0

    @_SETTINGS
    @given(case=_operation(method, path).as_strategy(generation_mode=GenerationMode.NEGATIVE))
    def rejected(case: Any) -> None:
        nonlocal refused
        if not case.meta.is_negative_at(ParameterLocation.BODY):
            return  # a mutated header or query, not the body
        try:
            parse(case.body)
        except InvalidRequest as exc:
            assert exc.status == 400
            refused += 1
            return
        # The whole body and the rule it breaks: pytest's repr of the case cuts both short.
        data = getattr(case.meta.phase, "data", None)
        pytest.fail(f"accepted a body the schema refuses ({getattr(data, 'description', '?')}):"
                    f" {json.dumps(case.body, default=str)}")

    rejected()
    assert refused > 10


def test_an_operation_that_creates_documents_201_not_200() -> None:
    # The handler answers 201 Created (tests/console/test_console_api.py); a 200 in the
    # document made the fuzz test fail whenever one of its generated keys was created.
    responses = DOC["paths"]["/v1/admin/keys"]["post"]["responses"]
    assert "201" in responses and "200" not in responses
    assert responses["201"]["description"] == "Created"
    assert "200" in DOC["paths"]["/v1/admin/keys"]["get"]["responses"]
