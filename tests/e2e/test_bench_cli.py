"""`appliance bench` against a real appliance on loopback (a small run)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import RunningServer


def test_bench_reports_each_level(server: RunningServer, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "appliance", "bench", "--url", server.base_url + "/v1",
         "--concurrency", "1,3", "--requests", "3", "--max-tokens", "8",
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
    assert level["ok"] == 0 and level["errors"] == {"0": 2} and level["passed"] is False
