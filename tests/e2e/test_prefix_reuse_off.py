"""`prefix_reuse_min = 0` turns prefix reuse off (the baseline of the shared-system bench)."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.conftest import RunningServer, make_settings, start_server

SYSTEM = ("You are the front-desk assistant of a small clinic. " * 12).strip()


@pytest.fixture(scope="module")
def no_reuse_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    settings = make_settings(tmp_path_factory.mktemp("noreuse"), parallel=2, ctx_size=512,
                             prefix_reuse_min=0)
    srv = start_server(settings)
    yield srv
    srv.close()


def _ask(client: openai.OpenAI, question: str) -> tuple[str, int, int]:
    r = client.chat.completions.create(
        model="default", temperature=0, max_tokens=6,
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}])
    assert r.usage is not None and r.usage.prompt_tokens_details is not None
    return (r.choices[0].message.content or "", r.usage.prompt_tokens,
            r.usage.prompt_tokens_details.cached_tokens or 0)


def test_every_prompt_is_decoded_whole(no_reuse_server: RunningServer,
                                       server: RunningServer) -> None:
    off = openai.OpenAI(base_url=no_reuse_server.base_url + "/v1", api_key="x", max_retries=0)
    on = openai.OpenAI(base_url=server.base_url + "/v1", api_key="x", max_retries=0)
    reused_before = no_reuse_server.engine.stats.reused_tokens
    # The same prompt three times (more than the two slots), then a sibling prompt.
    answers = [_ask(off, "What time do you open?") for _ in range(3)]
    answers.append(_ask(off, "Where do I park?"))
    assert all(cached == 0 for _, _, cached in answers), answers
    assert no_reuse_server.engine.stats.reused_tokens == reused_before
    assert answers[0][1] > 100
    # The same requests with reuse on (the default) do reuse the shared system prompt.
    # (Their text may differ in the last digits of the logits: the prompt is decoded in
    # other chunks, so no equality is asserted here.)
    with_reuse = [_ask(on, "What time do you open?"), _ask(on, "Where do I park?")]
    assert with_reuse[1][2] >= 100
    assert with_reuse[1][1] == answers[3][1]  # same prompt, same length
