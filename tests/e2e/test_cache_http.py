"""The response cache and /v1/embeddings over HTTP, with the official client, two keys and
two users: nothing is ever served across keys or users."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import aiohttp
import numpy as np
import openai
import pytest

from appliance.admission.keys import KeyStore, Scope
from appliance.encoder.sentence import Encoder
from appliance.store.db import Database
from tests.conftest import RunningServer, make_settings, start_server

pytestmark = pytest.mark.model

Q = "What is the capital of France?"
PARAPHRASE = "What's the capital of France?"
OTHER = "How do I bake bread?"


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[RunningServer, dict[str, str]]]:
    settings = make_settings(tmp_path_factory.mktemp("cache"), parallel=2, ctx_size=512,
                             cache_enabled=True)
    with Database(settings.database) as db:
        store = KeyStore(db)
        secrets = {"a": store.create_sync("a").secret, "b": store.create_sync("b").secret,
                   "admin": store.create_sync("root", scopes=[Scope.ADMIN]).secret,
                   "chat-only": store.create_sync("chat-only", scopes=[Scope.CHAT]).secret}
    srv = start_server(settings)
    yield srv, secrets
    srv.close()


def _client(srv: RunningServer, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.base_url + "/v1", api_key=key, max_retries=0)


def ask(srv: RunningServer, key: str, text: str, *, user: str | None = "u1",
        headers: dict[str, str] | None = None, **extra: Any) -> tuple[str, dict[str, str], Any]:
    """(X-Cache, all headers, the parsed completion)."""
    with _client(srv, key) as c:
        raw = c.chat.completions.with_raw_response.create(
            model="default", messages=[{"role": "system", "content": "Answer briefly."},
                                       {"role": "user", "content": text}],
            max_tokens=12, temperature=extra.pop("temperature", 0), extra_headers=headers,
            **({"user": user} if user is not None else {}), **extra)
        return raw.headers.get("x-cache", ""), dict(raw.headers), raw.parse()


def test_exact_and_semantic_hits_never_cross_keys_or_users(
        keyed: tuple[RunningServer, dict[str, str]]) -> None:
    srv, keys = keyed
    status, _, first = ask(srv, keys["a"], Q)
    assert status == "miss"
    status, _, again = ask(srv, keys["a"], Q)
    assert status == "hit-exact"
    assert again.choices[0].message.content == first.choices[0].message.content
    assert again.choices[0].finish_reason == first.choices[0].finish_reason
    assert again.usage.completion_tokens == first.usage.completion_tokens
    assert again.usage.prompt_tokens == first.usage.prompt_tokens
    assert again.id != first.id
    status, headers, para = ask(srv, keys["a"], PARAPHRASE)
    assert status == "hit-semantic"
    assert float(headers["x-cache-similarity"]) >= 0.95
    assert para.choices[0].message.content == first.choices[0].message.content
    # Another user under the same key, the same user under another key, no user at all:
    # the same question and its paraphrase are misses (no-store: the probes store nothing).
    probe = {"Cache-Control": "no-store"}
    for key, user in (("a", "u2"), ("b", "u1"), ("b", "u2"), ("a", None)):
        for text in (Q, PARAPHRASE):
            assert ask(srv, keys[key], text, user=user, headers=probe)[0] == "miss", \
                (key, user, text)
    assert ask(srv, keys["a"], Q, headers=probe)[0] == "hit-exact"  # still there for a/u1
    assert ask(srv, keys["a"], OTHER)[0] == "miss"


def test_cached_answer_is_streamed(keyed: tuple[RunningServer, dict[str, str]]) -> None:
    srv, keys = keyed
    text = "Name three colours."
    _, _, first = ask(srv, keys["a"], text, user="streamer")
    with _client(srv, keys["a"]) as c:
        raw = c.chat.completions.with_raw_response.create(
            model="default", messages=[{"role": "system", "content": "Answer briefly."},
                                       {"role": "user", "content": text}],
            max_tokens=12, temperature=0, user="streamer", stream=True,
            stream_options={"include_usage": True})
        assert raw.headers["x-cache"] == "hit-exact"
        chunks = list(raw.parse())
    pieces = [ch.choices[0].delta.content for ch in chunks if ch.choices
              and ch.choices[0].delta.content]
    assert "".join(pieces) == first.choices[0].message.content
    assert len(pieces) >= 2 or len(first.choices[0].message.content.split()) <= 4
    finish = [ch.choices[0].finish_reason for ch in chunks if ch.choices
              and ch.choices[0].finish_reason]
    assert finish == [first.choices[0].finish_reason]
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == first.usage.completion_tokens


def test_cache_control_and_uncacheable_sampling(
        keyed: tuple[RunningServer, dict[str, str]]) -> None:
    srv, keys = keyed
    text = "Spell the word cat."
    assert ask(srv, keys["b"], text, user="cc", headers={"Cache-Control": "no-store"})[0] \
        == "miss"
    assert ask(srv, keys["b"], text, user="cc")[0] == "miss"  # nothing was stored
    assert ask(srv, keys["b"], text, user="cc")[0] == "hit-exact"
    assert ask(srv, keys["b"], text, user="cc", headers={"Cache-Control": "no-cache"})[0] \
        == "bypass"
    assert ask(srv, keys["b"], text, user="cc", temperature=0.8, seed=1)[0] == "bypass"


def test_global_scope_is_for_admins_and_shared(
        keyed: tuple[RunningServer, dict[str, str]]) -> None:
    srv, keys = keyed
    faq = "What are the opening hours?"
    with pytest.raises(openai.PermissionDeniedError):
        ask(srv, keys["a"], faq, headers={"X-Cache-Scope": "global"})
    with pytest.raises(openai.BadRequestError):
        ask(srv, keys["admin"], faq, headers={"X-Cache-Scope": "everyone"})
    status, _, stored = ask(srv, keys["admin"], faq, user=None,
                            headers={"X-Cache-Scope": "global"})
    assert status == "miss"
    for key, user in (("a", "u1"), ("b", "u2"), ("b", None)):
        status, _, got = ask(srv, keys[key], faq, user=user)
        assert status == "hit-exact", (key, user)
        assert got.choices[0].message.content == stored.choices[0].message.content


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder.from_manifest()


def test_embeddings_with_the_official_client(keyed: tuple[RunningServer, dict[str, str]],
                                             encoder: Encoder) -> None:
    srv, keys = keyed
    texts = ["The patient has a fever.", "Paris is the capital of France."]
    with _client(srv, keys["a"]) as c:
        one = c.embeddings.create(model="default", input=texts[0])  # base64 by default
        many = c.embeddings.create(model="all-minilm-l6-v2-int8", input=texts,
                                   encoding_format="float")
    expected = encoder.encode(texts)
    assert len(one.data) == 1 and len(many.data) == 2
    assert one.model == many.model == "all-minilm-l6-v2-int8"
    got_one = np.asarray(one.data[0].embedding, dtype=np.float32)
    assert got_one.shape == (384,)
    assert float(got_one @ expected[0]) == pytest.approx(1.0, abs=1e-5)
    for i, row in enumerate(many.data):
        assert row.index == i
        assert float(np.asarray(row.embedding) @ expected[i]) == pytest.approx(1.0, abs=1e-5)
    assert many.usage.prompt_tokens == sum(encoder.token_counts(texts))
    assert many.usage.total_tokens == many.usage.prompt_tokens > one.usage.prompt_tokens > 2


async def test_embeddings_raw_base64_and_bad_input(
        keyed: tuple[RunningServer, dict[str, str]], encoder: Encoder) -> None:
    srv, keys = keyed
    url = srv.base_url + "/v1/embeddings"
    async with aiohttp.ClientSession() as http:

        async def post(key: str, body: dict[str, Any]) -> tuple[int, Any]:
            async with http.post(url, json=body,
                                 headers={"Authorization": f"Bearer {keys[key]}"}) as r:
                return r.status, await r.json()

        status, got = await post("a", {"model": "default", "input": "hello",
                                       "encoding_format": "base64"})
        assert status == 200
        vec = np.frombuffer(base64.b64decode(got["data"][0]["embedding"]), dtype="<f4")
        assert float(vec @ encoder.encode_one("hello")) == pytest.approx(1.0, abs=1e-5)
        for body, param in (({"model": "default", "input": []}, "input"),
                            ({"model": "default", "input": [1, "2", 3]}, "input"),
                            ({"model": "default", "input": [[101, 2], "mixed"]}, "input"),
                            ({"model": "default", "input": [[101, 10**6]]}, "input"),
                            ({"model": "default", "input": [[101], []]}, "input"),
                            ({"model": "default", "input": [[-1]]}, "input"),
                            ({"model": "default", "input": ["ok", ""]}, "input"),
                            ({"model": "default"}, "input"),
                            ({"model": "default", "input": "x", "encoding_format": "int8"},
                             "encoding_format"),
                            ({"model": "default", "input": "x", "dimensions": 128},
                             "dimensions")):
            status, got = await post("a", body)
            assert status == 400, body
            assert got["error"]["param"] == param
        status, got = await post("a", {"model": "text-embedding-3-small", "input": "x"})
        assert status == 404 and got["error"]["code"] == "model_not_found"
        status, got = await post("chat-only", {"model": "default", "input": "x"})
        assert status == 403 and got["error"]["code"] == "insufficient_scope"


def test_token_id_inputs_embed_as_their_text(keyed: tuple[RunningServer, dict[str, str]],
                                             encoder: Encoder) -> None:
    """Token ids of the encoder's own vocabulary (with or without [CLS]/[SEP], cut at its
    max length like a text), one array or a list of them, as LangChain sends them."""
    from tokenizers import Tokenizer

    from appliance.encoder.sentence import load_encoder_spec, locate_pinned

    tokenizer = Tokenizer.from_file(str(locate_pinned(load_encoder_spec().tokenizer, "tok")))
    tokenizer.no_truncation()  # (the file's own settings: the server cuts at its max length,
    tokenizer.no_padding()  # and ids are sent as they are)
    texts = ["The patient has a fever.", "Paris is the capital of France.",
             "word " * 400]  # longer than the encoder's 256 tokens: cut the same way
    framed = [tokenizer.encode(t).ids for t in texts]
    bare = [tokenizer.encode(t, add_special_tokens=False).ids for t in texts]
    assert framed[0][0] == 101 and bare[0][0] != 101 and len(bare[2]) > 256
    srv, keys = keyed
    with _client(srv, keys["a"]) as c:
        by_text = c.embeddings.create(model="default", input=texts, encoding_format="float")
        for ids in (framed, bare):
            got = c.embeddings.create(model="default", input=ids, encoding_format="float")
            assert got.usage.prompt_tokens == by_text.usage.prompt_tokens
            for want, row in zip(by_text.data, got.data, strict=True):
                assert np.allclose(want.embedding, row.embedding, atol=1e-6)
        single = c.embeddings.create(model="default", input=bare[0], encoding_format="float")
        assert np.allclose(single.data[0].embedding, by_text.data[0].embedding, atol=1e-6)


def test_logprobs_and_n_bypass_the_cache(keyed: tuple[RunningServer, dict[str, str]]) -> None:
    srv, keys = keyed
    text = "Name a large city."
    status, _, stored = ask(srv, keys["a"], text, user="lp")
    assert status == "miss"
    assert ask(srv, keys["a"], text, user="lp")[0] == "hit-exact"
    status, _, with_logprobs = ask(srv, keys["a"], text, user="lp", logprobs=True,
                                   top_logprobs=2)
    assert status == "bypass"  # a stored answer has no log-probabilities
    assert with_logprobs.choices[0].logprobs.content
    assert with_logprobs.choices[0].message.content == stored.choices[0].message.content
    status, _, several = ask(srv, keys["a"], text, user="lp", n=2)
    assert status == "bypass" and len(several.choices) == 2
    # Neither stored anything over the plain answer, which is still served.
    status, _, again = ask(srv, keys["a"], text, user="lp")
    assert status == "hit-exact"
    assert again.choices[0].logprobs is None
    assert again.choices[0].message.content == stored.choices[0].message.content


def test_responses_go_through_the_cache(keyed: tuple[RunningServer, dict[str, str]]) -> None:
    srv, keys = keyed
    with _client(srv, keys["b"]) as c:
        def respond() -> tuple[str, Any]:
            raw = c.responses.with_raw_response.create(
                model="default", input="What is two plus two?", instructions="Answer briefly.",
                max_output_tokens=12, temperature=0, user="resp")
            return raw.headers.get("x-cache", ""), raw.parse()

        first_status, first = respond()
        second_status, second = respond()
    assert (first_status, second_status) == ("miss", "hit-exact")
    assert second.output_text == first.output_text and first.output_text
    assert second.id != first.id
