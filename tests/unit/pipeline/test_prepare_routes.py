"""The preparer with several engines: a job for an upstream model carries its messages (the
redacted ones, memory included) and an estimate; ``auto`` picks by its rule, a policy's
routing topic judged by the real encoder; the cache keys the model that answers."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from appliance.admission.gate import ANONYMOUS
from appliance.api.requests import parse_chat, parse_completion
from appliance.config import REPO_ROOT
from appliance.encoder.sentence import Encoder
from appliance.engine.models import ServedModel
from appliance.engine.tokenizer import Tokenizer
from appliance.errors import InvalidRequest
from appliance.guards.rails import Guards
from appliance.guards.readiness import GuardsState
from appliance.observability.trace import RequestTrace
from appliance.pipeline.input_stage import InputStage
from appliance.pipeline.job import RequestContext
from appliance.pipeline.prepare import Preparer
from appliance.routing.auto import AutoRule
from appliance.routing.catalog import Catalog

BIG = "big-remote"


@dataclass(frozen=True)
class _Models:
    """An upstream engine as the catalog sees it (its name and models)."""

    name: str = "gpu"
    models: tuple[str, ...] = (BIG,)
    max_tokens: int = 300


def _ctx() -> RequestContext:
    return RequestContext(ANONYMOUS, RequestTrace("t", "/v1/chat/completions"))


def _chat(model: str, content: str, **fields: Any) -> Any:
    return parse_chat({"model": model, "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": content}],
        **fields})


@pytest.fixture(scope="module")
def routing_guards(encoder: Encoder, tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[GuardsState]:
    base = (REPO_ROOT / "appliance" / "guards" / "policies" / "default.toml").read_text()
    path = tmp_path_factory.mktemp("policy") / "routing.toml"
    path.write_text(base + '\n[[topics]]\nname = "oncology"\nroute = "large"\n'
                    'threshold = 0.6\nexamples = ["what does chemotherapy do to cancer '
                    'cells", "how is a tumour staged", "side effects of radiotherapy"]\n')
    state = GuardsState(enabled=True)
    guards = Guards.load(default_policy=str(path), encoder=encoder)
    state.loaded(guards)
    yield state
    guards.close()


@pytest.fixture
def prepare(served: ServedModel, tokenizer: Tokenizer, routing_guards: GuardsState
            ) -> Preparer:
    catalog = Catalog(served, [_Models()], auto=AutoRule(served.id, BIG, 40))
    return Preparer(catalog, InputStage(routing_guards), tokenizer=tokenizer, ctx_size=512)


async def test_an_upstream_job_carries_the_redacted_messages_and_an_estimate(
        prepare: Preparer) -> None:
    job = await prepare.chat(_chat(BIG, "Mail jane.doe@example.com the results."), _ctx())
    assert (job.route.model, job.route.embedded) == (BIG, False)
    assert job.request.prompt_tokens == () and job.request.model == BIG
    assert job.request.text is not None
    assert [m.content for m in job.request.text.messages] == [
        "Be brief.", "Mail [EMAIL] the results."]
    assert job.prompt_tokens == job.prompt_estimate > 0
    assert job.request.max_tokens == 300  # the engine's max_tokens when none is asked
    assert job.route.fingerprint is None


async def test_auto_picks_by_size_and_by_the_policys_routing_topic(
        prepare: Preparer, served: ServedModel) -> None:
    small = await prepare.chat(_chat("auto", "Say hello."), _ctx())
    assert (small.route.model, small.route.reason) == (served.id, "small")
    assert small.request.prompt_tokens  # the embedded engine's tokens
    long = await prepare.chat(_chat("auto", "Please summarise: " + "words " * 200), _ctx())
    assert (long.route.model, long.route.reason) == (BIG, "prompt_tokens")
    topic = await prepare.chat(_chat("auto", "What does chemotherapy do to cancer cells?"),
                               _ctx())
    assert (topic.route.model, topic.route.reason) == (BIG, "topic")
    assert topic.request.prompt_tokens == ()


async def test_token_id_prompts_are_for_the_embedded_model_only(prepare: Preparer) -> None:
    with pytest.raises(InvalidRequest, match="token ids"):
        await prepare.completion(parse_completion({"model": BIG, "prompt": [1, 2, 3]}),
                                 _ctx())
    text = await prepare.completion(parse_completion({"model": BIG, "prompt": "Once upon",
                                                      "echo": True}), _ctx())
    assert text.request.text is not None and text.request.text.text == "Once upon"
    assert text.echo_text == "Once upon" and text.request.max_tokens == 16


def test_a_routing_topic_routes_and_never_answers(routing_guards: GuardsState,
                                                   encoder: Encoder) -> None:
    rails = routing_guards.get().rails()
    text = "What does chemotherapy do to cancer cells?"
    assert rails.topics.routes and rails.topics.routed(text) == "oncology"
    assert rails.topics.match(encoder.encode_one(text)) is None  # no canned answer
    assert rails.topics.routed("What time does the clinic open?") is None


@pytest.mark.parametrize(("fields", "param"), [
    ({"n": 2}, "n"),
    ({"logprobs": True}, "logprobs"),
    ({"tools": [{"type": "function", "function": {"name": "lookup"}}]}, "tools"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
])
async def test_what_only_the_embedded_engine_does_is_refused_for_an_upstream_model(
        prepare: Preparer, fields: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        await prepare.chat(_chat(BIG, "When do you open?", **fields), _ctx())
    assert refused.value.status == 400 and refused.value.param == param
    assert refused.value.code == "unsupported_parameter" and BIG in str(refused.value)
    # the same request for the embedded model is prepared (n within max_n aside)
    if param != "n":
        job = await prepare.chat(_chat("default", "When do you open?", **fields), _ctx())
        assert job.route.embedded


async def test_n_and_logprobs_of_a_completion_for_an_upstream_model_are_refused(
        prepare: Preparer) -> None:
    for fields, param in (({"n": 3}, "n"), ({"logprobs": 2}, "logprobs")):
        with pytest.raises(InvalidRequest) as refused:
            await prepare.completion(parse_completion(
                {"model": BIG, "prompt": "Opening hours:", **fields}), _ctx())
        assert refused.value.param == param
