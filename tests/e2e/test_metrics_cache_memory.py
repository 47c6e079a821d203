"""The cache and memory metrics are fed: lookups by result, entries per tier, bytes."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.conftest import RunningServer, make_settings, start_server
from tests.e2e.test_observability import sample, scrape


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(make_settings(tmp_path_factory.mktemp("cm"), parallel=2,
                                         ctx_size=512, cache_enabled=True,
                                         cache_sweep_interval_s=0.2))
    yield running
    running.close()


def test_cache_and_memory_metrics(srv: RunningServer, tmp_path: Path) -> None:
    body = json.dumps({"scope": "user", "user": "ana", "content": "Ana is allergic to nuts."})
    req = urllib.request.Request(srv.base_url + "/v1/memory", data=body.encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status in (200, 201)
    _, before = scrape(srv.base_url)
    with openai.OpenAI(base_url=srv.base_url + "/v1", api_key="x", max_retries=0) as c:
        for _ in range(2):  # a miss, then an exact hit
            c.chat.completions.create(model="default", max_tokens=6, temperature=0,
                                      messages=[{"role": "user", "content": "Say hi."}])
    deadline = time.monotonic() + 30
    while True:
        _, after = scrape(srv.base_url)
        if sample(after, "appliance_memory_entries", scope="user") == 1 or \
                time.monotonic() > deadline:
            break
        time.sleep(0.2)

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert delta("appliance_cache_lookups_total", result="miss") == 1
    assert delta("appliance_cache_lookups_total", result="hit-exact") == 1
    assert sample(after, "appliance_memory_entries", scope="user") == 1
    assert sample(after, "appliance_memory_store_bytes") >= len("Ana is allergic to nuts.")
