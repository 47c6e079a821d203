"""`appliance bench` against a real appliance on loopback (a small run)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.tools.bench import SHARED_SYSTEM, _numbered, load_prompts
from tests.conftest import RunningServer


def test_bench_reports_each_level(server: RunningServer, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "appliance", "bench", "--url", server.base_url + "/v1",
         # 48 tokens: the output rail releases text in windows (a sentence, or 32 tokens),
         # so a shorter answer may arrive in one piece and have no inter-token gap at all
         "--concurrency", "1,3", "--requests", "3", "--max-tokens", "48",
         "--prompt-set", "shared-system", "--json", str(out), "--ttft-p95", "60",
         "--itl-p95", "30"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| 1 | 3/3 |" in proc.stdout and "| 3 | 3/3 |" in proc.stdout
    levels = json.loads(out.read_text())
    assert [lvl["concurrency"] for lvl in levels] == [1, 3]
    for lvl in levels:
        assert lvl["ok"] == 3 and lvl["errors"] == {}
        assert lvl["tokens_per_s"] > 0
        assert 0 < lvl["ttft_p50"] <= lvl["ttft_p95"] <= lvl["ttft_p99"]
        assert lvl["itl_p50"] > 0 and lvl["passed"] is True


def test_bench_counts_errors_and_fails_criteria(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "appliance", "bench", "--url", "http://127.0.0.1:9/v1",
         "--concurrency", "1", "--requests", "2", "--json", str(tmp_path / "b.json")],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    level = json.loads((tmp_path / "b.json").read_text())[0]
    assert level["ok"] == 0 and level["errors"] == {"connection": 2}
    assert level["passed"] is False and set(level["failed"]) == {"ttft_p95", "error_rate"}


def test_bench_reports_the_criteria_a_level_misses(server: RunningServer,
                                                    tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "appliance", "bench", "--url", server.base_url,
         "--concurrency", "2", "--requests", "2", "--max-tokens", "4",
         "--ttft-p95", "0.000001", "--itl-p95", "30", "--json", str(out)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "NO ttft_p95 |" in proc.stdout
    assert "c=2" in proc.stderr and "2/2" in proc.stderr  # the progress bar
    level = json.loads(out.read_text())[0]
    assert level["ok"] == 2 and level["errors"] == {}
    assert level["failed"] == ["ttft_p95"] and level["passed"] is False


def test_bench_takes_prompts_from_a_jsonl_file(server: RunningServer, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "Name a colour."}\n\n'
                       '{"messages": [{"role": "user", "content": "Name a fruit."}]}\n')
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "appliance", "bench", "--url", server.base_url + "/v1",
         "--concurrency", "2", "--requests", "4", "--max-tokens", "4", "--prompt-set",
         str(prompts), "--ttft-p95", "60", "--itl-p95", "30", "--json", str(out)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    level = json.loads(out.read_text())[0]
    assert level["ok"] == 4 and level["tokens_per_s"] > 0


@pytest.mark.parametrize(("args", "message"), [
    (["--prompt-set", "no-such-set"], "unknown prompt set 'no-such-set'"),
    (["--concurrency", "4,zero"], "--concurrency wants positive integers"),
    (["--concurrency", "0"], "--concurrency wants positive integers"),
])
def test_bench_refuses_bad_arguments_clearly(args: list[str], message: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "appliance", "bench", "--url", "http://127.0.0.1:9", *args],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and message in proc.stderr


def test_bad_jsonl_row_is_named(tmp_path: Path) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "ok"}\n{"text": "no prompt key"}\n')
    with pytest.raises(SystemExit, match=r"p.jsonl:2: expected a JSON object"):
        load_prompts(str(prompts))


def test_shared_system_prompt_is_about_300_tokens_and_numbered_per_request() -> None:
    from appliance import config
    from appliance.engine.models import ModelStore
    from appliance.engine.native import LlamaModel

    settings = config.load(env={})
    store = ModelStore(settings.manifest, settings.models_dir)
    model = LlamaModel(store.location(store.resolve(settings.model)))
    try:
        n = len(model.tokenize(SHARED_SYSTEM, add_special=False, parse_special=False))
    finally:
        model.close()
    assert 280 <= n <= 320
    prompts = load_prompts("shared-system")
    assert all(p[0] == {"role": "system", "content": SHARED_SYSTEM} for p in prompts)
    numbered = _numbered(prompts[0], 17)
    assert numbered[0] == prompts[0][0]
    assert numbered[1]["content"] == prompts[0][1]["content"] + " (17)"
