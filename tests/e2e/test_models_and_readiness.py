"""Model pins, a second model by id or path, and liveness/readiness."""

from __future__ import annotations

import json
import shutil
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import openai
import pytest

from appliance.engine.engine import Engine
from appliance.engine.models import ModelStore
from appliance.engine.native import supports_gpu_offload
from appliance.errors import ModelError
from tests.conftest import make_settings, start_server


def _get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_default_model_is_pinned_and_verifies(tmp_path: Path) -> None:
    s = make_settings(tmp_path)
    store = ModelStore(s.manifest, s.models_dir)
    spec = store.resolve("smollm2-135m-instruct")
    assert spec.sha256 and len(spec.sha256) == 64
    verified = store.verify(spec)
    assert verified.sha256 == spec.sha256
    assert "site-packages" in str(verified.path)  # used where the package installed it


def test_corrupt_model_file_fails_with_clear_message(tmp_path: Path) -> None:
    s = make_settings(tmp_path)
    store = ModelStore(s.manifest, s.models_dir)
    good = store.verify(store.resolve("smollm2-135m-instruct")).path
    bad = tmp_path / good.name  # same file name: the manifest pin applies
    with good.open("rb") as src, bad.open("wb") as dst:
        dst.write(src.read(1 << 20))
    with pytest.raises(ModelError, match="fails its sha256 pin"):
        store.verify(store.resolve(str(bad)))


def test_missing_and_unknown_models_are_clear_errors(tmp_path: Path) -> None:
    s = make_settings(tmp_path)
    store = ModelStore(s.manifest, s.models_dir)
    with pytest.raises(ModelError, match="unknown model 'nope'"):
        store.resolve("nope")
    with pytest.raises(ModelError, match="not found"):
        store.resolve(str(tmp_path / "absent.gguf"))
    empty = ModelStore(s.manifest, tmp_path / "no-models")
    with pytest.raises(ModelError, match="missing; run `appliance models assemble`"):
        empty.verify(empty.resolve("gemma3-270m"))


def test_unpinned_model_by_path_loads(tmp_path: Path) -> None:
    s = make_settings(tmp_path)
    store = ModelStore(s.manifest, s.models_dir)
    src = store.verify(store.resolve("smollm2-135m-instruct")).path
    copy = tmp_path / "my-model.gguf"
    shutil.copyfile(src, copy)
    spec = store.resolve(str(copy))
    assert spec.sha256 is None and spec.id == "my-model"
    assert store.verify(spec).sha256 == store.resolve("smollm2-135m-instruct").sha256


def test_second_model_by_manifest_id_base_model_without_template(tmp_path: Path) -> None:
    srv = start_server(make_settings(tmp_path, model="gemma3-270m", parallel=2, ctx_size=512))
    try:
        with openai.OpenAI(base_url=srv.base_url + "/v1", api_key="x", max_retries=0) as c:
            ids = {m.id: m.model_extra for m in c.models.list().data}
            assert ids["gemma3-270m"] and ids["gemma3-270m"]["loaded"] is True
            r = c.completions.create(model="gemma3-270m", prompt="The sky is", max_tokens=6,
                                     temperature=0)
            assert r.model == "gemma3-270m" and r.choices[0].text
            with pytest.raises(openai.BadRequestError) as exc:
                c.chat.completions.create(model="default", max_tokens=4,
                                          messages=[{"role": "user", "content": "hi"}])
            assert exc.value.code == "chat_template_missing"
            assert "no chat template" in str(exc.value)
    finally:
        srv.close()


def test_chat_template_fallback_makes_a_base_model_chat(tmp_path: Path) -> None:
    template = ("{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
                "{% if add_generation_prompt %}assistant:{% endif %}")
    srv = start_server(make_settings(tmp_path, model="gemma3-270m", parallel=1, ctx_size=256,
                                     chat_template_fallback=template))
    try:
        with openai.OpenAI(base_url=srv.base_url + "/v1", api_key="x", max_retries=0) as c:
            r = c.chat.completions.create(model="default", max_tokens=4, temperature=0,
                                          messages=[{"role": "user", "content": "hi"}])
            assert r.choices[0].message.content is not None
    finally:
        srv.close()


def test_health_answers_before_ready_and_ready_flips(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    gate = threading.Event()
    original = Engine._run

    def gated_run(self: Engine) -> None:
        gate.wait(60)
        original(self)

    monkeypatch.setattr(Engine, "_run", gated_run)
    srv = start_server(make_settings(tmp_path, parallel=1, ctx_size=256), wait=False)
    try:
        status, body = _get(srv.base_url + "/health")
        assert status == 200 and body["status"] == "ok"
        status, body = _get(srv.base_url + "/ready")
        assert status == 503 and body["status"] == "starting"
        req = urllib.request.Request(
            srv.base_url + "/v1/chat/completions", method="POST",
            data=json.dumps({"model": "default", "messages": [{"role": "user",
                                                               "content": "hi"}]}).encode())
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(req, timeout=10)
        assert exc.value.code == 503
        assert exc.value.headers["Retry-After"] == "2"
        assert json.loads(exc.value.read())["error"]["code"] == "model_not_ready"
        gate.set()
        srv.wait_ready(60)
        status, body = _get(srv.base_url + "/ready")
        assert status == 200 and body["status"] == "ready" and "cpu backend" in str(body["backend"])
    finally:
        gate.set()
        srv.close()


@pytest.mark.skipif(supports_gpu_offload(), reason="this llama.cpp build has a GPU backend")
def test_gpu_offload_request_on_cpu_build_fails_ready_clearly(tmp_path: Path) -> None:
    srv = start_server(make_settings(tmp_path, parallel=1, ctx_size=256, n_gpu_layers=99),
                       wait=False)
    try:
        for _ in range(600):
            status, body = _get(srv.base_url + "/ready")
            if body.get("status") == "failed":
                break
            threading.Event().wait(0.05)
        assert status == 503 and body["status"] == "failed"
        assert "no GPU backend" in str(body["error"])
    finally:
        srv.close()


def test_engine_step_failure_fails_requests_cleanly_and_keeps_serving(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    srv = start_server(make_settings(tmp_path, parallel=2, ctx_size=256))
    original = Engine._sample
    calls = {"n": 0}

    def flaky(self: Engine, *args: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("injected sampler failure")
        original(self, *args)

    monkeypatch.setattr(Engine, "_sample", flaky)
    try:
        with openai.OpenAI(base_url=srv.base_url + "/v1", api_key="x", max_retries=0) as c:
            with pytest.raises(openai.InternalServerError) as exc:
                c.chat.completions.create(model="default", max_tokens=4,
                                          messages=[{"role": "user", "content": "hi"}])
            assert exc.value.status_code == 500
            assert "Traceback" not in str(exc.value.body)
            r = c.chat.completions.create(model="default", max_tokens=4,
                                          messages=[{"role": "user", "content": "hi"}])
            assert r.choices[0].message.content is not None
        assert srv.engine.ready and srv.engine.stats.running == 0
    finally:
        srv.close()
