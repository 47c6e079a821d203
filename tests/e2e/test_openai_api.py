"""End to end: the real default model behind a real server, driven by the `openai` client."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.conftest import RunningServer

QUESTION = [{"role": "user", "content": "Name three colours of the rainbow."}]


@pytest.fixture(scope="module")
def client(server: RunningServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused",
                       max_retries=0, timeout=120) as c:
        yield c


def test_models_lists_manifest_and_default(client: openai.OpenAI) -> None:
    models = {m.id: m for m in client.models.list().data}
    assert {"default", "smollm2-135m-instruct", "gemma3-270m"} <= set(models)
    extra = models["default"].model_extra or {}
    assert extra["loaded"] is True
    assert (models["gemma3-270m"].model_extra or {})["loaded"] is False


def test_chat_non_streamed(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="default", messages=QUESTION,  # type: ignore[arg-type]
                                       max_tokens=24, temperature=0)
    assert r.object == "chat.completion"
    assert r.model == "smollm2-135m-instruct"
    assert r.id.startswith("chatcmpl-")
    assert r.system_fingerprint and r.system_fingerprint.startswith("fp_")
    choice = r.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content and choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    assert r.usage is not None
    assert r.usage.prompt_tokens > 5
    assert 1 <= r.usage.completion_tokens <= 24
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_length_limit_gives_finish_reason_length(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="default", temperature=0, max_tokens=3,
        messages=[{"role": "user", "content": "Write a long story about a dragon."}])
    assert r.choices[0].finish_reason == "length"
    assert r.usage is not None and r.usage.completion_tokens == 3


def test_stream_equals_non_stream_and_reports_usage(client: openai.OpenAI) -> None:
    kwargs = dict(model="default", messages=QUESTION, max_tokens=32, temperature=0)
    whole = client.chat.completions.create(**kwargs)  # type: ignore[call-overload]
    chunks = list(client.chat.completions.create(
        **kwargs, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1
    assert finals[0].choices[0].finish_reason == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert len({c.id for c in chunks}) == 1


def test_text_completions_stream_and_not(client: openai.OpenAI) -> None:
    r = client.completions.create(model="default", prompt="The capital of France is",
                                  max_tokens=8, temperature=0)
    assert r.object == "text_completion"
    assert r.choices[0].text
    assert r.usage is not None and r.usage.completion_tokens <= 8
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="default", prompt="The capital of France is", max_tokens=8, temperature=0,
        stream=True))
    assert streamed == r.choices[0].text
    echo = client.completions.create(model="default", prompt="Hello", max_tokens=2,
                                     temperature=0, echo=True)
    assert echo.choices[0].text.startswith("Hello")


def test_default_max_tokens_for_completions_is_16(client: openai.OpenAI) -> None:
    r = client.completions.create(model="default", prompt="Count: one, two, three,",
                                  temperature=0, logit_bias={"2": -100})
    assert r.usage is not None and r.usage.completion_tokens <= 16


def test_stop_strings_cut_the_text_and_never_show(client: openai.OpenAI) -> None:
    ask = "Count from 1 to 20, separated by commas."
    kwargs = dict(model="default", temperature=0, max_tokens=40,
                  messages=[{"role": "user", "content": ask}])
    full = client.chat.completions.create(**kwargs).choices[0].message.content  # type: ignore[call-overload]
    assert full and len(full) > 12
    stop = full[6:10]  # four characters from the middle: usually spans a token boundary
    cut = full[: full.index(stop)]
    r = client.chat.completions.create(**kwargs, stop=[stop, "never-seen"])  # type: ignore[call-overload]
    assert r.choices[0].message.content == cut
    assert r.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        **kwargs, stop=stop, stream=True) if c.choices)  # type: ignore[call-overload]
    assert streamed == cut


def test_same_seed_same_text_other_seed_differs(client: openai.OpenAI) -> None:
    def run(seed: int) -> str:
        r = client.chat.completions.create(
            model="default", temperature=1.0, top_p=0.95, seed=seed, max_tokens=32,
            messages=[{"role": "user", "content": "Invent a name for a cat."}])
        return r.choices[0].message.content or ""

    a, b = run(1234), run(1234)
    assert a == b
    others = {run(s) for s in (1, 2, 3)}
    assert len(others | {a}) > 1


def test_sampling_parameters_are_accepted(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="default", messages=QUESTION, max_tokens=8, temperature=0.7, top_p=0.9,
        presence_penalty=0.5, frequency_penalty=0.5, seed=7,
        extra_body={"top_k": 40, "min_p": 0.05, "repeat_penalty": 1.1})
    assert r.usage is not None and r.usage.completion_tokens >= 1


def test_logit_bias_bans_a_token(client: openai.OpenAI, server: RunningServer) -> None:
    model = server.engine.model
    prompt = "1, 2, 3, 4,"
    base = client.completions.create(model="default", prompt=prompt, max_tokens=1,
                                     temperature=0).choices[0].text
    banned = model.tokenize(base, add_special=False, parse_special=False)[0]
    biased = client.completions.create(model="default", prompt=prompt, max_tokens=1,
                                       temperature=0, logit_bias={str(banned): -100})
    assert biased.choices[0].text != base


def test_prefix_reuse_reports_cached_tokens(client: openai.OpenAI) -> None:
    system = ("You are the front-desk assistant of a small clinic. " * 12).strip()
    usages = []
    for q in ("What time do you open?", "Where do I park?"):
        r = client.chat.completions.create(
            model="default", temperature=0, max_tokens=4,
            messages=[{"role": "system", "content": system}, {"role": "user", "content": q}])
        assert r.usage is not None
        usages.append(r.usage)
    details = usages[1].prompt_tokens_details
    assert details is not None and details.cached_tokens is not None
    assert details.cached_tokens >= 100  # the shared system prompt was not decoded again
    assert details.cached_tokens < usages[1].prompt_tokens


def test_a_prompt_that_comes_back_finds_its_parked_cache(client: openai.OpenAI) -> None:
    """One request at a time: A, then B (overwrites A's slot, which is first parked in an
    idle one), then A again. A's whole prompt is reused from the parked copy, and the
    answer is the same as the first time (the copied KV cells are A's, intact)."""
    a = [{"role": "user", "content": "Tell me about the history of lighthouses on rocky "
          "northern coasts, the keepers who lived in them and the lamps they tended."}]
    b = [{"role": "user", "content": "Write a recipe for a simple vegetable soup with "
          "carrots, leeks, potatoes and a little thyme, for four people."}]
    runs = []
    for messages in (a, b, a):
        r = client.chat.completions.create(model="default", messages=messages,  # type: ignore[arg-type]
                                           max_tokens=24, temperature=0)
        assert r.usage is not None and r.usage.prompt_tokens_details is not None
        runs.append((r.choices[0].message.content, r.usage.prompt_tokens,
                     r.usage.prompt_tokens_details.cached_tokens or 0))
    (text_a, prompt_a, _), (_, _, cached_b), (text_a2, _, cached_a2) = runs
    assert cached_b < prompt_a - 10  # B shares only the chat template with A
    assert cached_a2 == prompt_a - 1  # all of A but the last token, decoded for its logits
    assert text_a2 == text_a
