"""The pure parts of `make bench` (scripts/bench_side_by_side.py); CI never runs the
side-by-side itself (it needs an idle machine and builds llama-server)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from appliance import config


@pytest.fixture(scope="module")
def sbs() -> Iterator[ModuleType]:
    sys.path.insert(0, str(config.REPO_ROOT / "scripts"))
    try:
        import bench_side_by_side

        yield bench_side_by_side
    finally:
        sys.path.pop(0)


def test_build_flags_are_native_build_sh_cpu_flags(sbs: Any) -> None:
    version, flags = sbs.native_build_params()
    text = (config.REPO_ROOT / "native" / "build.sh").read_text()
    assert f'version="{version}"' in text
    assert "-DGGML_NATIVE=OFF" in flags and " ".join(flags) in text
    cache = {f.removeprefix("-D").split("=")[0]: f.split("=")[1] for f in flags}
    import llama_build  # (on the path while sbs is imported)

    assert llama_build._flags_match(cache, flags)
    assert not llama_build._flags_match({**cache, "GGML_NATIVE": "ON"}, flags)


def test_batched_bench_rates(sbs: Any) -> None:
    text = """
|    PP |     TG |    B |   N_KV |   T_PP s | S_PP t/s |   T_TG s | S_TG t/s |      T s |    S t/s |
|-------|--------|------|--------|----------|----------|----------|----------|----------|----------|
|    32 |     64 |    1 |     96 |    0.046 |   695.65 |    0.943 |    67.87 |    0.989 |    97.07 |
|    32 |     64 |   16 |   1536 |    0.530 |   966.04 |   10.352 |    98.92 |   10.882 |   141.15 |
"""
    assert sbs.parse_batched_bench(text) == {1: 67.87, 16: 98.92}


def test_results_replace_only_the_marked_section(sbs: Any, tmp_path: Path) -> None:
    doc = tmp_path / "B.md"
    doc.write_text(f"# B\n\nbefore\n\n{sbs.BEGIN}\nold\n{sbs.END}\n\n## after\nkept\n")
    sbs.write_between_markers(doc, f"{sbs.BEGIN}\nnew\n{sbs.END}")
    assert doc.read_text() == f"# B\n\nbefore\n\n{sbs.BEGIN}\nnew\n{sbs.END}\n\n## after\nkept\n"
    plain = tmp_path / "P.md"
    plain.write_text("# P\n")
    sbs.write_between_markers(plain, f"{sbs.BEGIN}\nx\n{sbs.END}")
    assert plain.read_text() == f"# P\n\n{sbs.BEGIN}\nx\n{sbs.END}\n"


def _level(c: int, tok: float, ttft50: float, ttft95: float, ok: int = 8,
           n: int = 8) -> dict[str, Any]:
    return {"concurrency": c, "requests": n, "ok": ok, "errors": {} if ok == n else
            {"503": n - ok}, "tokens_per_s": tok, "ttft_p50": ttft50, "ttft_p95": ttft95,
            "itl_p50": 0.02, "itl_p95": 0.03, "e2e_p50": 1.0}


def test_targets_are_judged_on_medians(sbs: Any) -> None:
    runs = []
    for rep, (a16, b16) in enumerate([(100.0, 90.0), (120.0, 100.0), (130.0, 95.0)]):
        runs.append(sbs.Run(rep, "A", "short", [_level(1, 60, 0.020, 0.03),
                                                _level(16, a16, 0.1, 0.2),
                                                _level(64, 100, 1.0, 2.0, ok=7)]))
        runs.append(sbs.Run(rep, "B", "short", [_level(1, 55, 0.025, 0.03),
                                                _level(16, b16, 0.1, 0.3)]))
        runs.append(sbs.Run(rep, "A", "shared-system", [_level(4, 50, 0.1, 0.2)]))
        runs.append(sbs.Run(rep, "A0", "shared-system", [_level(4, 40, 0.3, 0.4)]))
    short = {t: sbs.medians(runs, t, "short") for t in ("A", "B")}
    assert short["A"][16]["tokens_per_s"] == 120.0 and short["B"][16]["tokens_per_s"] == 95.0
    assert short["A"][64]["errors"] == {"503": 3} and short["A"][64]["requests"] == 24
    shared = {t: sbs.medians(runs, t, "shared-system") for t in ("A", "A0")}
    rows = "\n".join(sbs._targets(short, shared, {16: 150.0}))
    assert "| 16 streams: tok/s ≥ 1.10 × llama-server | 1.26 × | yes |" in rows
    assert "| 16 streams: TTFT p95 ≤ 0.8 × llama-server's | 0.67 × | yes |" in rows
    assert "| 16 streams: tok/s ≥ 0.85 × batched-bench ceiling | 0.80 × | **no** |" in rows
    assert "| 1 stream: TTFT p50 within 10 ms of llama-server's | -5 ms | yes |" in rows
    assert "64 streams: no errors | 21 / 24 ok" in rows and rows.count("**no**") == 2
    assert "4 clients: 0.33 × | yes |" in rows


def test_streaming_targets_compare_guards_on_and_off_with_llama_server(sbs: Any) -> None:
    def level(c: int, tok: float, ttft50: float, ttft95: float, gap95: float) -> dict[str, Any]:
        return {**_level(c, tok, ttft50, ttft95), "itl_p95": gap95}

    short = {"A": {1: level(1, 90, 0.050, 0.06, 0.100), 16: level(16, 150, 0.5, 0.9, 0.40)},
             "G": {4: level(4, 130, 0.1, 0.2, 0.03), 16: level(16, 170, 0.4, 0.6, 0.11)},
             "B": {1: level(1, 100, 0.030, 0.04, 0.013), 4: level(4, 120, 0.1, 0.2, 0.04),
                   16: level(16, 160, 0.3, 0.7, 0.11)}}
    rows = "\n".join(sbs._stream_targets(short))
    assert "| guards on, 16 clients: tok/s ≥ 1.0 × llama-server | 0.94 × | **no** |" in rows
    assert "| guards on, 16 clients: TTFT p95 ≤ 1.0 × llama-server | 1.29 × | **no** |" in rows
    assert "| guards on, 16 clients: chunk gap p95 ≤ 4 × llama-server | 3.64 × | yes |" in rows
    assert "| guards on, 1 client: TTFT p50 ≤ llama-server + 15 ms | +20 ms | **no** |" in rows
    assert "| guards on, 1 client: chunk gap p95 ≤ 60 ms | 100 ms | **no** |" in rows
    assert "| guards off, 16 clients: TTFT p95 ≤ 1.0 × llama-server | 0.86 × | yes |" in rows
    assert "| guards off, 4 clients: tok/s ≥ 1.05 × llama-server | 1.08 × | yes |" in rows
    assert "| guards off, 16 clients: tok/s ≥ 1.05 × llama-server | 1.06 × | yes |" in rows
    assert "not measured" not in rows
    assert sbs._plan(sbs.parse_args([]))[:3] == [("A", ["short", "shared-system"]),
                                                 ("B", ["short", "shared-system"]),
                                                 ("G", ["short"])]
    assert sbs.parse_args([]).temperature == 0.7
