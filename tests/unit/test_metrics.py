"""Metrics: fed from a RequestTrace, engine gauges at scrape time, documented both ways."""

from __future__ import annotations

import re

from prometheus_client.parser import text_string_to_metric_families

from appliance.config import REPO_ROOT
from appliance.engine.engine_config import BATCH_SIZE_BOUNDS, EngineStats
from appliance.observability.metrics import EngineGauges, Metrics
from appliance.observability.trace import RequestTrace

METRICS_DOC = (REPO_ROOT / "docs" / "METRICS.md").read_text()


# Every metric the observability work named.
ISSUE_6 = {
    "appliance_requests_total", "appliance_request_seconds", "appliance_errors_total",
    "appliance_time_to_first_token_seconds", "appliance_inter_token_latency_seconds",
    "appliance_queue_wait_seconds", "appliance_prefill_seconds", "appliance_guard_seconds",
    "appliance_output_holdback_seconds", "appliance_tokens_total",
    "appliance_tokens_per_request", "appliance_sequences_running", "appliance_queue_depth",
    "appliance_kv_cache_usage_ratio", "appliance_decode_batch_size",
    "appliance_rate_limited_total", "appliance_overload_rejections_total",
    "appliance_guard_verdicts_total", "appliance_cache_lookups_total",
    "appliance_memory_entries", "appliance_memory_store_bytes",
    "appliance_memory_to_response_token_ratio",
}


def documented() -> set[str]:
    return set(re.findall(r"^\| `(appliance_[a-z_]+)` \|", METRICS_DOC, re.MULTILINE))


def exposed(text: str) -> set[str]:
    """Metric names as exposed (``# TYPE`` lines), without the library's ``_created``."""
    names = set(re.findall(r"^# TYPE (\S+) \S+$", text, re.MULTILINE))
    return {n for n in names if not n.endswith("_created")}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_every_documented_metric_is_exposed_and_every_exposed_one_documented() -> None:
    text = Metrics().render().decode()
    docs, names = documented(), exposed(text)
    assert ISSUE_6 - docs == set(), "named in the issue but not documented"
    assert docs - names == set(), "documented but not exposed"
    assert names - docs == set(), "exposed but not documented"
    assert all(n.startswith("appliance_") for n in names)


def test_each_app_has_its_own_registry() -> None:
    a, b = Metrics(), Metrics()
    a.count_cache_lookup("miss")
    sa, sb = samples(a.render().decode()), samples(b.render().decode())
    assert sa[("appliance_cache_lookups_total", (("result", "miss"),))] == 1.0
    assert ("appliance_cache_lookups_total", (("result", "miss"),)) not in sb


def test_a_request_trace_feeds_the_per_request_metrics() -> None:
    m = Metrics()
    t = RequestTrace("r1", "/v1/chat/completions", arrived=100.0)
    t.status, t.finished_s, t.queue_wait_s = 200, 1.2, 0.03
    t.first_token_s, t.prefill_s = 0.25, 0.1
    t.prompt_tokens, t.completion_tokens, t.cached_tokens = 40, 5, 16
    t.token_gaps_s = [0.02, 0.02, 0.2, 0.02]
    m.observe_request(t, "/v1/chat/completions")
    s = samples(m.render().decode())
    assert s[("appliance_requests_total",
              (("endpoint", "/v1/chat/completions"), ("status", "200")))] == 1
    assert s[("appliance_request_seconds_sum", ())] == 1.2
    assert s[("appliance_time_to_first_token_seconds_bucket", (("le", "0.25"),))] == 1
    assert s[("appliance_time_to_first_token_seconds_bucket", (("le", "0.15"),))] == 0
    assert s[("appliance_queue_wait_seconds_count", ())] == 1
    assert s[("appliance_prefill_seconds_sum", ())] == 0.1
    assert s[("appliance_inter_token_latency_seconds_count", ())] == 4
    assert s[("appliance_inter_token_latency_seconds_bucket", (("le", "0.03"),))] == 3
    assert s[("appliance_tokens_total", (("direction", "prompt"),))] == 40
    assert s[("appliance_tokens_total", (("direction", "completion"),))] == 5
    assert s[("appliance_tokens_total", (("direction", "cached"),))] == 16
    assert s[("appliance_tokens_total", (("direction", "memory"),))] == 0
    assert s[("appliance_tokens_per_request_sum", (("direction", "prompt"),))] == 40
    assert ("appliance_errors_total", (("type", "server_error"),)) not in s


def _refuse(m: Metrics, kinds: tuple[str, ...]) -> None:
    for kind in kinds:
        t = RequestTrace("r", "/v1/completions")
        t.status, t.error_type, t.key_name = 429, "rate_limit_exceeded", "frontdesk"
        t.rate_limit_kind, t.finished_s = kind, 0.001
        m.observe_request(t, "/v1/completions")


def test_key_names_are_not_exposed_unless_asked() -> None:
    m = Metrics()
    _refuse(m, ("tokens", "tokens"))
    text = m.render().decode()
    assert "frontdesk" not in text
    assert samples(text)[("appliance_rate_limited_total",
                          (("key", "*"), ("kind", "tokens")))] == 2


def test_refusals_are_counted_by_kind() -> None:
    m = Metrics(key_labels=True)
    _refuse(m, ("tokens", "tokens", "concurrency"))
    t = RequestTrace("r", "/v1/completions")
    t.status, t.error_type, t.finished_s = 503, "server_overloaded", 0.002
    m.observe_request(t, "/v1/completions")
    s = samples(m.render().decode())
    assert s[("appliance_rate_limited_total", (("key", "frontdesk"), ("kind", "tokens")))] == 2
    assert s[("appliance_rate_limited_total",
              (("key", "frontdesk"), ("kind", "concurrency")))] == 1
    assert s[("appliance_overload_rejections_total", ())] == 1
    assert s[("appliance_errors_total", (("type", "rate_limit_exceeded"),))] == 3
    assert s[("appliance_errors_total", (("type", "server_overloaded"),))] == 1
    # an error before any token: no TTFT, no token histograms
    assert s[("appliance_time_to_first_token_seconds_count", ())] == 0
    assert s[("appliance_tokens_per_request_count", (("direction", "prompt"),))] == 0


def test_the_stages_api_feeds_its_series() -> None:
    m = Metrics()
    m.observe_guard("pii", "input", 0.0004)
    m.count_guard_verdict("pii", "email", "redact", "input")
    m.observe_holdback(0.03)
    m.set_memory_entries("user", 12)
    m.set_memory_store_bytes(4096)
    m.observe_memory_ratio(0.5)
    s = samples(m.render().decode())
    assert s[("appliance_guard_seconds_count", (("direction", "input"), ("guard", "pii")))] == 1
    assert s[("appliance_guard_verdicts_total", (("action", "redact"), ("direction", "input"),
                                                 ("guard", "pii"), ("label", "email")))] == 1
    assert s[("appliance_output_holdback_seconds_count", ())] == 1
    assert s[("appliance_memory_entries", (("scope", "user"),))] == 12
    assert s[("appliance_memory_store_bytes", ())] == 4096
    assert s[("appliance_memory_to_response_token_ratio_sum", ())] == 0.5


def test_engine_gauges_and_batch_histogram_are_read_at_scrape_time() -> None:
    stats = EngineStats()
    for n in (1, 16, 16, 17, 512, 5000):
        stats.count_batch(n)
    m = Metrics(lambda: EngineGauges(3, 7, 0.25, list(stats.batch_size_counts),
                                     float(stats.batch_size_sum)))
    s = samples(m.render().decode())
    assert s[("appliance_sequences_running", ())] == 3
    assert s[("appliance_queue_depth", ())] == 7
    assert s[("appliance_kv_cache_usage_ratio", ())] == 0.25
    assert s[("appliance_decode_batch_size_bucket", (("le", "1.0"),))] == 1
    assert s[("appliance_decode_batch_size_bucket", (("le", "16.0"),))] == 3
    assert s[("appliance_decode_batch_size_bucket", (("le", "32.0"),))] == 4
    assert s[("appliance_decode_batch_size_bucket", (("le", "512.0"),))] == 5
    assert s[("appliance_decode_batch_size_bucket", (("le", "+Inf"),))] == 6
    assert s[("appliance_decode_batch_size_count", ())] == 6
    assert s[("appliance_decode_batch_size_sum", ())] == 1 + 16 + 16 + 17 + 512 + 5000
    assert len(stats.batch_size_counts) == len(BATCH_SIZE_BOUNDS) + 1


def test_token_gaps_split_a_chunk_of_several_tokens() -> None:
    t = RequestTrace("r", "/v1/completions")
    t.mark_tokens(1)
    assert t.first_token_s is not None and t.token_gaps_s == []
    t.mark_tokens(2)
    t.mark_tokens(5)  # three tokens released together (a stop-string hold-back)
    t.mark_tokens(5)  # the final event of the same step adds no gap
    assert len(t.token_gaps_s) == 4
    assert t.token_gaps_s[1] == t.token_gaps_s[2] == t.token_gaps_s[3]


def test_the_overhead_benchmark_runs_and_reports_every_figure() -> None:
    from appliance.tools.metrics_bench import measure

    r = measure(tokens=64, n=200)
    assert set(r) >= {"request_us", "token_us", "step_us", "scrape_us"}
    assert all(v > 0 for v in r.values())


def test_the_guard_networks_reused_scores_are_read_per_direction_at_scrape_time() -> None:
    reused = {"input": 2, "output": 5}
    m = Metrics(guard_reused=lambda: reused)
    s = samples(m.render().decode())
    assert s[("appliance_guard_scores_reused_total", (("direction", "input"),))] == 2
    assert s[("appliance_guard_scores_reused_total", (("direction", "output"),))] == 5
    reused["output"] = 9
    s = samples(m.render().decode())
    assert s[("appliance_guard_scores_reused_total", (("direction", "output"),))] == 9
