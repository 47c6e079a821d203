"""Observability against a real server: /metrics, JSON access logs without PII, audit of
guard actions through the real middleware."""

from __future__ import annotations

import asyncio
import io
import logging
import re
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import openai
import orjson
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from appliance.admission.gate import ANONYMOUS
from appliance.admission.keys import KeyStore, Scope
from appliance.errors import InvalidRequest
from appliance.observability.audit import Audit
from appliance.observability.logs import JsonFormatter
from appliance.observability.metrics import Metrics
from appliance.observability.redaction import Scrubber
from appliance.observability.trace import GuardAction
from appliance.pipeline.job import Chunk, RequestContext
from appliance.store.db import Database
from appliance.web.cors import CORS, CorsPolicy
from appliance.web.middleware import errors_middleware
from appliance.web.routes import relay
from appliance.web.state import AUDIT, METRICS, SCRUBBER, SETTINGS, TRACE
from tests.conftest import RunningServer, free_port, make_settings, start_server
from tests.unit.test_metrics import documented, exposed

pytestmark = pytest.mark.model

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(base_url: str, key: str | None = None) -> tuple[str, Samples]:
    req = urllib.request.Request(base_url + "/metrics")
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return text, out


def http_error(req: str | urllib.request.Request, key: str | None = None
               ) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of a request that must fail (the error is closed)."""
    if key is not None and isinstance(req, urllib.request.Request):
        req.add_header("Authorization", f"Bearer {key}")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=10)
    with info.value as err:
        return err.code, dict(err.headers), err.read()


def sample(s: Samples, name: str, **labels: str) -> float:
    return s.get((name, tuple(sorted(labels.items()))), 0.0)


def _client(srv: RunningServer, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.base_url + "/v1", api_key=key, max_retries=0)


# --- /metrics on the shared server ----------------------------------------------------------

def test_metrics_are_documented_both_ways_on_the_live_endpoint(server: RunningServer) -> None:
    text, _ = scrape(server.base_url)
    names = exposed(text)
    assert documented() - names == set(), "documented but not exposed"
    assert names - documented() == set(), "exposed but not documented"


def test_a_system_prompt_met_again_is_not_scored_again(server: RunningServer) -> None:
    # A system prompt no other test sends (its injection score here: 0.003), and questions
    # this shared server has not checked before
    system = ("Harbour Street dental clinic front desk. Opening hours: Monday to Friday "
              "8:00-18:00, Saturday 9:00-12:00. Cancellations: by phone, 24 hours ahead.")
    nonce = time.time_ns()
    _, before = scrape(server.base_url)
    with _client(server) as c:
        for question in (f"Are you open on Saturday mornings? (ticket {nonce})",
                         f"How do I cancel a visit? (ticket {nonce})"):
            r = c.chat.completions.create(
                model="default", max_tokens=4, temperature=0,
                messages=[{"role": "system", "content": system},
                          {"role": "user", "content": question}])
            assert r.choices[0].finish_reason in ("stop", "length")
    _, after = scrape(server.base_url)
    # the second request's system prompt: its scores kept from the first one's check
    assert sample(after, "appliance_guard_scores_reused_total", direction="input") - \
        sample(before, "appliance_guard_scores_reused_total", direction="input") == 1


def test_an_answer_streamed_again_is_checked_from_kept_window_scores(
        server: RunningServer) -> None:
    # Greedy, the cache bypassed: the same answer twice, its windows met again the 2nd time
    messages = [{"role": "user", "content": f"Describe a calm lake. (note {time.time_ns()})"}]
    _, before = scrape(server.base_url)
    texts = []
    with _client(server) as c:
        for _ in range(2):
            stream = c.chat.completions.create(
                model="default", max_tokens=16, temperature=0, stream=True, messages=messages,
                extra_headers={"Cache-Control": "no-cache, no-store"})
            texts.append("".join(ch.choices[0].delta.content or "" for ch in stream
                                 if ch.choices))
    _, after = scrape(server.base_url)
    assert texts[0] == texts[1] and texts[0].strip()
    assert sample(after, "appliance_guard_scores_reused_total", direction="output") - \
        sample(before, "appliance_guard_scores_reused_total", direction="output") >= 1


def test_requests_feed_the_metrics(server: RunningServer) -> None:
    _, before = scrape(server.base_url)
    with _client(server) as c:
        r = c.chat.completions.create(
            model="default", messages=[{"role": "user", "content": "Count to five."}],
            max_tokens=8, temperature=0, extra_body={"ignore_eos": True})
        assert r.usage is not None and r.usage.completion_tokens == 8
        stream = c.completions.create(model="default", prompt="Once upon a time",
                                      max_tokens=6, temperature=0, stream=True,
                                      extra_body={"ignore_eos": True})
        assert "".join(ch.choices[0].text for ch in stream if ch.choices)
    assert http_error(server.base_url + "/no/such/jane.doe@example.org")[0] == 404
    _, after = scrape(server.base_url)

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert delta("appliance_requests_total", endpoint="/v1/chat/completions",
                 status="200") == 1
    assert delta("appliance_requests_total", endpoint="/v1/completions", status="200") == 1
    assert delta("appliance_requests_total", endpoint="unmatched", status="404") == 1
    assert delta("appliance_errors_total", type="invalid_request_error") >= 1
    # the scrape before counts too: /metrics is an endpoint like any other
    assert delta("appliance_requests_total", endpoint="/metrics", status="200") >= 1
    assert delta("appliance_time_to_first_token_seconds_count") == 2
    assert delta("appliance_queue_wait_seconds_count") == 2
    assert delta("appliance_prefill_seconds_count") == 2
    # 8 + 6 tokens: at most 7 + 5 gaps after each first token (the output rail releases
    # text in windows, and the tokens of the first window count no gap)
    assert delta("appliance_inter_token_latency_seconds_count") <= 12
    # the guards ran on both: every window held back, every guard timed and counted
    assert delta("appliance_output_holdback_seconds_count") >= 2
    assert delta("appliance_guard_seconds_count", guard="rules", direction="input") == 2
    assert delta("appliance_guard_seconds_count", guard="output-rail",
                 direction="output") >= 2
    assert delta("appliance_guard_verdicts_total", guard="prompt-injection", label="benign",
                 action="allow", direction="input") == 2
    assert delta("appliance_tokens_total", direction="completion") == 14
    assert delta("appliance_tokens_total", direction="prompt") > 8
    assert delta("appliance_tokens_per_request_count", direction="completion") == 2
    assert delta("appliance_decode_batch_size_count") >= 14
    assert delta("appliance_request_seconds_count") >= 4
    ttft = delta("appliance_time_to_first_token_seconds_sum")
    e2e_streams = sample(after, "appliance_request_seconds_sum")
    assert 0 < ttft < e2e_streams
    assert sample(after, "appliance_kv_cache_usage_ratio") > 0  # slots keep their prompts' KV
    assert sample(after, "appliance_sequences_running") == 0
    assert sample(after, "appliance_queue_depth") == 0


def test_every_response_carries_a_request_id(server: RunningServer) -> None:
    req = urllib.request.Request(server.base_url + "/v1/models",
                                 headers={"X-Request-Id": "trace-me-123"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.headers["X-Request-Id"] == "trace-me-123"
    with urllib.request.urlopen(server.base_url + "/health", timeout=10) as r:
        assert re.fullmatch(r"[0-9a-f]{32}", r.headers["X-Request-Id"])


# --- admin scope and rate-limit counters ------------------------------------------------------

@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[RunningServer, dict[str, str]]]:
    settings = make_settings(tmp_path_factory.mktemp("obs-keyed"), parallel=2, ctx_size=256,
                             metrics_access="admin",
                             metrics_key_labels=True)
    with Database(settings.database) as db:
        store = KeyStore(db)
        secrets = {"admin": store.create_sync("ops", scopes=[Scope.ADMIN]).secret,
                   "chat": store.create_sync("frontdesk", scopes=[Scope.CHAT]).secret,
                   "limited": store.create_sync("limited", rpm=1, burst_requests=1).secret}
    srv = start_server(settings)
    yield srv, secrets
    srv.close()


def test_metrics_can_require_the_admin_scope(keyed: tuple[RunningServer, dict[str, str]]
                                             ) -> None:
    srv, secrets = keyed
    for key, status, kind in ((None, 401, "authentication_error"),
                              (secrets["chat"], 403, "permission_error")):
        code, _, body = http_error(urllib.request.Request(srv.base_url + "/metrics"), key)
        assert code == status and orjson.loads(body)["error"]["type"] == kind
    _, before = scrape(srv.base_url, secrets["admin"])
    for key in (None, secrets["chat"]):
        http_error(urllib.request.Request(srv.base_url + "/metrics"), key)
    _, after = scrape(srv.base_url, secrets["admin"])
    for status in ("401", "403"):
        labels = {"endpoint": "/metrics", "status": status}
        assert sample(after, "appliance_requests_total", **labels) - sample(
            before, "appliance_requests_total", **labels) == 1


def test_rate_limit_refusals_are_counted_by_key_and_kind(
        keyed: tuple[RunningServer, dict[str, str]]) -> None:
    srv, secrets = keyed
    with _client(srv, secrets["limited"]) as c:
        c.completions.create(model="default", prompt="Hi", max_tokens=1)
        with pytest.raises(openai.RateLimitError):
            c.completions.create(model="default", prompt="Hi", max_tokens=1)
    _, s = scrape(srv.base_url, secrets["admin"])
    assert sample(s, "appliance_rate_limited_total", key="limited", kind="requests") == 1
    assert sample(s, "appliance_errors_total", type="rate_limit_exceeded") == 1


# --- logs: JSON lines, no PII, with content logging off and on --------------------------------

EMAILS = ("jane.doe@example.org", "j.smith+clinic@hospital.example.com")
PHONES = ("+44 20 7946 0958", "(415) 555-0132", "415-555-0199")
CARD = "4111 1111 1111 1111"
CARD_DIGITS = CARD.replace(" ", "")
PLANTED = (*EMAILS, *PHONES, CARD, CARD_DIGITS, "7946 0958", "555-0132", "555-0199")
MARKER = "Zanzibar"  # plain text that is not PII: logged only with content logging


@pytest.fixture(scope="module", params=[False, True], ids=["content-off", "content-on"])
def logged(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[RunningServer, bool]]:
    settings = make_settings(tmp_path_factory.mktemp("obs-logs"), parallel=2, ctx_size=512,
                             log_content=request.param)
    srv = start_server(settings)
    yield srv, request.param
    srv.close()


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield out
    root.removeHandler(handler)
    root.setLevel(old_level)


def test_logs_hold_no_pii(logged: tuple[RunningServer, bool], captured: io.StringIO) -> None:
    srv, content = logged
    text = (f"{MARKER}: my e-mail is {EMAILS[0]}, or write to {EMAILS[1]}; call me on "
            f"{PHONES[0]} or {PHONES[1]} or {PHONES[2]}. My card is {CARD}. Repeat all of it.")
    ids = []
    with _client(srv) as c:
        r = c.chat.completions.with_raw_response.create(
            model="default", messages=[{"role": "user", "content": text}], max_tokens=24,
            temperature=0)
        ids.append(r.headers["x-request-id"])
        stream = c.completions.with_raw_response.create(
            model="default", prompt=text, max_tokens=8, temperature=0, stream=True)
        ids.append(stream.headers["x-request-id"])
        assert list(stream.parse())
        # errors: a bad parameter, a card number as a JSON number, a broken JSON body
        with pytest.raises(openai.BadRequestError) as bad:
            c.chat.completions.create(model="default",
                                      messages=[{"role": "user", "content": text}],
                                      temperature="hot")  # type: ignore[arg-type]
        ids.append(bad.value.response.headers["x-request-id"])
        with pytest.raises(openai.BadRequestError) as bad:
            c.completions.create(model="default", prompt=text, max_tokens=1,
                                 extra_body={"user": int(CARD_DIGITS), "n": 2})
        ids.append(bad.value.response.headers["x-request-id"])
    req = urllib.request.Request(srv.base_url + "/v1/chat/completions", method="POST",
                                 data=f'{{"messages": "{text}" '.encode(),
                                 headers={"Content-Type": "application/json"})
    code, headers, _ = http_error(req)
    assert code == 400
    ids.append(headers["X-Request-Id"])
    assert http_error(srv.base_url + f"/v1/{EMAILS[0]}")[0] == 404

    output = captured.getvalue()
    lines = [orjson.loads(line) for line in output.splitlines()]  # every line is JSON
    access = [x for x in lines if x["logger"] == "appliance.access"]
    assert len(access) == 6
    assert {x["request_id"] for x in access} >= set(ids)
    for planted in PLANTED:
        assert planted not in output, f"{planted!r} leaked into the log"
    first = next(x for x in access if x["request_id"] == ids[0])
    assert first["status"] == 200 and first["route"] == "/v1/chat/completions"
    assert first["key"] == "anonymous" and first["completion_tokens"] > 0
    assert first["ttft_ms"] > 0 and first["ms"] >= first["ttft_ms"]
    assert {x["route"] for x in access if x["status"] == 404} == {"unmatched"}
    if content:
        assert MARKER in output
        body = first["request_body"]
        assert "[EMAIL]" in body and "[PHONE]" in body and "[CARD]" in body
        assert "response_text" in first
    else:
        assert MARKER not in output
        assert not any("request_body" in x or "response_text" in x for x in access)


# --- guard actions reach the audit log through the real middleware --------------------------

@pytest.fixture
async def guarded(tmp_path: Path) -> AsyncIterator[tuple[str, web.Application]]:
    """The real middleware and observability hooks around handlers that record guard
    actions the way the guard stages will (no model needed)."""
    async def blocked(request: web.Request) -> web.Response:
        request[TRACE].guard_actions.append(GuardAction("injection", "input", "jailbreak",
                                                        "block", 3.5))
        raise InvalidRequest("blocked by policy")

    async def redacted(request: web.Request) -> web.Response:
        trace = request[TRACE]
        trace.guard_actions.append(GuardAction("pii", "input", "email", "redact", 0.2))
        trace.guard_actions.append(GuardAction("toxicity", "output", "insult", "flag", 4.0))
        return web.json_response({"ok": True})

    async def slow(request: web.Request) -> web.Response:
        request[TRACE].guard_actions.append(GuardAction("pii", "input", "phone", "flag", 1.0))
        await asyncio.sleep(30)
        return web.json_response({})

    app = web.Application(middlewares=[errors_middleware])
    app[SETTINGS] = make_settings(tmp_path)
    db = Database(tmp_path / "guarded.db")
    app[METRICS], app[AUDIT], app[SCRUBBER] = Metrics(), Audit(db), Scrubber()
    app[CORS] = CorsPolicy.parse("")
    app.router.add_post("/v1/blocked", blocked)
    app.router.add_post("/v1/redacted", redacted)
    app.router.add_post("/v1/slow", slow)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}", app
    await runner.cleanup()
    await db.aclose()


async def test_guard_actions_are_audited_when_the_request_ends(
        guarded: tuple[str, web.Application]) -> None:
    base, app = guarded
    async with aiohttp.ClientSession() as s:
        async with s.post(base + "/v1/blocked", json={}) as r:
            assert r.status == 400
            blocked_id = r.headers["X-Request-Id"]
        async with s.post(base + "/v1/redacted", json={}) as r:
            assert r.status == 200
            redacted_id = r.headers["X-Request-Id"]
        async with s.post(base + "/v1/redacted", json={}) as r:
            assert r.status == 200
    audit = app[AUDIT]
    records = await asyncio.to_thread(audit.export_sync)
    assert [(r.event, r.detail["request_id"]) for r in records[:3]] == [
        ("guard.block", blocked_id), ("guard.redact", redacted_id),
        ("guard.flag", redacted_id)]
    assert len(records) == 5
    assert records[0].detail == {"request_id": blocked_id, "route": "/v1/blocked",
                                 "guard": "injection", "direction": "input",
                                 "label": "jailbreak", "action": "block", "ms": 3.5}
    assert records[0].actor == "anonymous"
    assert (await asyncio.to_thread(audit.verify_sync)).ok


async def test_a_client_that_goes_away_is_recorded_and_audited(
        guarded: tuple[str, web.Application]) -> None:
    base, app = guarded
    async with aiohttp.ClientSession() as s:
        with pytest.raises(asyncio.TimeoutError):
            async with s.post(base + "/v1/slow", json={},
                              timeout=aiohttp.ClientTimeout(total=0.3)):
                pass
    text = ""
    for _ in range(50):  # the server notices the closed connection and cancels the handler
        text = app[METRICS].render().decode()
        if 'status="499"' in text:
            break
        await asyncio.sleep(0.1)
    assert 'appliance_requests_total{endpoint="/v1/slow",status="499"} 1.0' in text
    assert 'appliance_errors_total{type="client_disconnected"} 1.0' in text
    for _ in range(50):
        records = await asyncio.to_thread(app[AUDIT].export_sync)
        if records:
            break
        await asyncio.sleep(0.1)
    assert [(r.event, r.detail["route"]) for r in records] == [("guard.flag", "/v1/slow")]


async def test_a_stream_that_finds_its_client_gone_is_recorded_as_gone(
        tmp_path: Path) -> None:
    """Whether the handler is cancelled or a write of the stream finds the connection closed
    first is a race; both are the client going away (499), not a 200. Here the server does
    not cancel handlers, so the real ``relay`` learns it from a write."""
    client_left = asyncio.Event()

    async def streamed(request: web.Request) -> web.StreamResponse:
        async def chunks() -> AsyncIterator[Chunk]:
            yield Chunk("first")
            await client_left.wait()
            for _ in range(200):  # a write fails once the server has seen the close
                yield Chunk("more")
                await asyncio.sleep(0.01)

        return await relay(request, RequestContext(ANONYMOUS, request[TRACE]), chunks(),
                           lambda chunk, first: [{"text": chunk.text}])

    app = web.Application(middlewares=[errors_middleware])
    app[SETTINGS] = make_settings(tmp_path)
    app[METRICS], app[SCRUBBER], app[CORS] = Metrics(), Scrubber(), CorsPolicy.parse("")
    app.router.add_post("/v1/streamed", streamed)
    runner = web.AppRunner(app, handler_cancellation=False)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession() as s:
            r = await s.post(f"http://127.0.0.1:{port}/v1/streamed", json={})
            assert r.status == 200
            assert b"first" in await r.content.readline()
            r.close()  # mid-answer
        client_left.set()
        text = ""
        for _ in range(50):
            text = app[METRICS].render().decode()
            if 'endpoint="/v1/streamed"' in text:
                break
            await asyncio.sleep(0.1)
    finally:
        await runner.cleanup()
    assert 'appliance_requests_total{endpoint="/v1/streamed",status="499"} 1.0' in text
    assert 'appliance_requests_total{endpoint="/v1/streamed",status="200"}' not in text
    assert 'appliance_errors_total{type="client_disconnected"} 1.0' in text
