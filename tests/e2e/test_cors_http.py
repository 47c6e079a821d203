"""CORS over HTTP: a server with API keys and an allow-list of origins answers preflights
without a key, and labels every response to an allowed origin (errors and streams too)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from appliance.admission.keys import KeyStore
from appliance.store.db import Database
from tests.conftest import RunningServer, make_settings, start_server

ALLOWED = "https://ward.example.org"
OTHER = "https://elsewhere.example.com"
CHAT = {"model": "default", "messages": [{"role": "user", "content": "Say hi."}],
        "max_tokens": 3, "temperature": 0}


@pytest.fixture(scope="module")
def cors_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, str]]:
    settings = make_settings(tmp_path_factory.mktemp("cors"), parallel=2, ctx_size=512,
                             cors_origins=f"{ALLOWED}, https://second.example.org/")
    with Database(settings.database) as db:
        secret = KeyStore(db).create_sync("browser-app").secret
    srv = start_server(settings)
    yield srv, secret
    srv.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _preflight(origin: str, method: str = "POST") -> dict[str, str]:
    return {"Origin": origin, "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os"}


async def test_preflight_needs_no_key(cors_server: tuple[RunningServer, str],
                                      http: aiohttp.ClientSession) -> None:
    srv, _ = cors_server
    for path in ("/v1/chat/completions", "/v1/models/default", "/v1/responses"):
        async with http.options(srv.base_url + path, headers=_preflight(ALLOWED)) as r:
            assert r.status == 204, path
            assert r.headers["Access-Control-Allow-Origin"] == ALLOWED
            assert "POST" in r.headers["Access-Control-Allow-Methods"]
            assert r.headers["Access-Control-Allow-Headers"] == \
                "authorization, content-type, x-stainless-os"
            assert int(r.headers["Access-Control-Max-Age"]) > 0
    async with http.options(srv.base_url + "/v1/chat/completions",
                            headers=_preflight("https://second.example.org")) as r:
        assert r.status == 204  # (a trailing slash in the setting is not part of an origin)
    async with http.options(srv.base_url + "/v1/chat/completions",
                            headers=_preflight(OTHER)) as r:
        assert r.status == 403
        assert "Access-Control-Allow-Origin" not in r.headers
        assert (await r.json())["error"]["code"] == "cors_origin_not_allowed"


async def test_responses_carry_the_origin_only_when_allowed(
        cors_server: tuple[RunningServer, str], http: aiohttp.ClientSession) -> None:
    srv, secret = cors_server
    auth = {"Authorization": f"Bearer {secret}"}
    url = srv.base_url + "/v1/chat/completions"
    async with http.post(url, json=CHAT, headers={**auth, "Origin": ALLOWED}) as r:
        assert r.status == 200
        assert r.headers["Access-Control-Allow-Origin"] == ALLOWED
        assert "X-Request-Id" in r.headers["Access-Control-Expose-Headers"]
        assert "Origin" in r.headers["Vary"]
    async with http.post(url, json={**CHAT, "stream": True},
                         headers={**auth, "Origin": ALLOWED}) as r:
        assert r.status == 200 and r.headers["Access-Control-Allow-Origin"] == ALLOWED
        assert (await r.read()).endswith(b"data: [DONE]\n\n")
    # Errors too: no key (401), a bad body (400), an unknown model (404).
    async with http.post(url, json=CHAT, headers={"Origin": ALLOWED}) as r:
        assert r.status == 401 and r.headers["Access-Control-Allow-Origin"] == ALLOWED
    async with http.post(url, json={"model": "default"}, headers={**auth, "Origin": ALLOWED}) \
            as r:
        assert r.status == 400 and r.headers["Access-Control-Allow-Origin"] == ALLOWED
    async with http.get(srv.base_url + "/v1/models/nope",
                        headers={**auth, "Origin": ALLOWED}) as r:
        assert r.status == 404 and r.headers["Access-Control-Allow-Origin"] == ALLOWED
    # Another origin, or none, is never labelled.
    async with http.post(url, json=CHAT, headers={**auth, "Origin": OTHER}) as r:
        assert r.status == 200 and "Access-Control-Allow-Origin" not in r.headers
    async with http.post(url, json=CHAT, headers=auth) as r:
        assert r.status == 200 and "Access-Control-Allow-Origin" not in r.headers


async def test_cors_is_off_by_default(server: RunningServer,
                                      http: aiohttp.ClientSession) -> None:
    async with http.options(server.base_url + "/v1/chat/completions",
                            headers=_preflight(ALLOWED)) as r:
        assert r.status == 405
        assert "Access-Control-Allow-Origin" not in r.headers
    async with http.get(server.base_url + "/v1/models", headers={"Origin": ALLOWED}) as r:
        assert r.status == 200 and "Access-Control-Allow-Origin" not in r.headers
