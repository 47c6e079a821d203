"""Prometheus metrics: one registry per app, every series the appliance exposes.

``Metrics(gauges)`` builds a private ``CollectorRegistry`` (never the library's global one)
holding every metric documented in ``docs/METRICS.md``; ``render()`` is the text for
``GET /metrics``. Three kinds of feeding:

* Per request, from the ``RequestTrace`` when the request ends: ``observe_request(trace,
  endpoint)`` (called once by the web layer) fills requests, errors, end-to-end latency,
  TTFT, inter-token latency, queue wait, prefill, tokens, rate-limit/overload refusals, and
  the guard, hold-back, cache and memory-ratio series (through ``observe_guard``,
  ``count_guard_verdict``, ``observe_holdback``, ``count_cache_lookup``,
  ``observe_memory_ratio``). No stage needs this object.
* By the web layer's periodic sweep: ``set_memory_entries``, ``set_memory_store_bytes``.
* At scrape time, from ``gauges()``: the engine and queue gauges and the decode batch-size
  histogram, whose per-step bucket counts the engine thread keeps in ``EngineStats``
  (a bisect and two additions per step; no lock, no Python work per token); from
  ``guard_reused()``: the guard network's scores kept for texts met again, per direction.

Bucket boundaries are chosen for LLM latencies: milliseconds to tens of seconds end to
end, sub-millisecond to a second for the guards and for the gaps between tokens.

Label values are bounded: ``endpoint`` is the route's canonical path (one value for every
unmatched path), ``type`` an error type of ``appliance.errors``, ``key`` an API-key name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from appliance.engine.engine_config import BATCH_SIZE_BOUNDS
from appliance.observability.engine_metrics import EngineMetrics, EngineView
from appliance.observability.trace import RequestTrace

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# End to end, TTFT, queue wait, prefill: 5 ms .. 60 s.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 1.5,
                   2.5, 5.0, 7.5, 10.0, 15.0, 30.0, 60.0)
# Gaps between streamed tokens: 1 ms .. 5 s (a decode step of 16 sequences is ~200 ms here).
TOKEN_GAP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2,
                     0.3, 0.5, 0.75, 1.0, 2.5, 5.0)
# Guards (rules: microseconds; ONNX classifiers: milliseconds) and output hold-back.
GUARD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                 0.25, 0.5, 1.0, 2.5)
TOKEN_COUNT_BUCKETS = (1, 4, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
RATIO_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
# Tokens in one llama_decode call (decode tokens plus prefill chunks), counted per step by
# the engine thread in EngineStats.
BATCH_SIZE_BUCKETS = BATCH_SIZE_BOUNDS

UNMATCHED = "unmatched"  # the endpoint label of every path no route matched
ANY_KEY = "*"  # the key label of every key when key names are not exposed
TOKEN_DIRECTIONS = ("prompt", "completion", "cached", "memory")


@dataclass(frozen=True)
class EngineGauges:
    """What the engine and the admission queue look like at scrape time."""

    sequences_running: int
    queue_depth: int
    kv_cache_usage_ratio: float
    batch_size_buckets: Sequence[int]  # per BATCH_SIZE_BUCKETS bound, then +Inf (not cumulative)
    batch_size_sum: float


class _ScrapeTimeCollector(Collector):
    """The series read when scraped: the engine and queue gauges, and the guard network's
    reused scores."""

    def __init__(self, gauges: Callable[[], EngineGauges] | None,
                 guard_reused: Callable[[], Mapping[str, int]] | None) -> None:
        self._gauges = gauges
        self._guard_reused = guard_reused

    def describe(self) -> Iterable[Metric]:
        return self._families(None, None)

    def collect(self) -> Iterable[Metric]:
        return self._families(self._gauges() if self._gauges is not None else None,
                              self._guard_reused() if self._guard_reused is not None
                              else None)

    @staticmethod
    def _families(g: EngineGauges | None,
                  reused: Mapping[str, int] | None) -> Iterator[Metric]:
        running = GaugeMetricFamily("appliance_sequences_running",
                                    "Sequences the engine is decoding now.")
        queued = GaugeMetricFamily("appliance_queue_depth",
                                   "Requests waiting in the admission queue for a slot.")
        kv = GaugeMetricFamily("appliance_kv_cache_usage_ratio",
                               "KV cache cells in use / cells allocated (0..1).")
        batch = HistogramMetricFamily("appliance_decode_batch_size",
                                      "Tokens per llama_decode call (one per engine step).")
        spared = CounterMetricFamily(
            "appliance_guard_scores_reused", "Texts the guard network did not score again, "
            "per direction (input: user turns, system prompts, tool results; output: streamed "
            "windows): their scores were kept from an earlier check of the same text, or "
            "taken from a run of it in progress.", labels=["direction"])
        if g is not None:
            running.add_metric([], g.sequences_running)
            queued.add_metric([], g.queue_depth)
            kv.add_metric([], g.kv_cache_usage_ratio)
            cumulative, buckets = 0, []
            bounds = [str(float(b)) for b in BATCH_SIZE_BUCKETS] + ["+Inf"]
            for bound, n in zip(bounds, g.batch_size_buckets, strict=True):
                cumulative += n
                buckets.append((bound, float(cumulative)))
            batch.add_metric([], buckets, g.batch_size_sum)
        if reused is not None:
            for direction, n in reused.items():
                spared.add_metric([direction], n)
        yield from (running, queued, kv, batch, spared)


class Metrics:
    """Every appliance metric, in a registry of its own; see the module doc."""

    def __init__(self, gauges: Callable[[], EngineGauges] | None = None, *,
                 key_labels: bool = False,
                 engines: Callable[[], Sequence[EngineView]] | None = None,
                 guard_reused: Callable[[], Mapping[str, int]] | None = None) -> None:
        # Off, per-key series carry ANY_KEY instead of the key's name: a scrape then
        # reveals nothing about who the clients are.
        self._key_labels = key_labels
        self.registry = r = CollectorRegistry(auto_describe=True)
        # Registered in this order, which is the order of the exposition.
        self._add_request_metrics(r)
        self._add_latency_metrics(r)
        self._add_token_metrics(r)
        self._add_admission_and_guard_metrics(r)
        self._add_cache_and_memory_metrics(r)
        r.register(_ScrapeTimeCollector(gauges, guard_reused))
        self.engines = EngineMetrics(r, LATENCY_BUCKETS, engines)

    def _add_request_metrics(self, r: CollectorRegistry) -> None:
        self.requests = Counter("appliance_requests_total", "HTTP requests answered.",
                                ["endpoint", "status"], registry=r)
        self.request_seconds = Histogram(
            "appliance_request_seconds", "End-to-end request latency, from arrival to the "
            "last byte (streams included).", buckets=LATENCY_BUCKETS, registry=r)
        self.errors = Counter("appliance_errors_total", "Requests answered with an error, "
                              "by OpenAI error type.", ["type"], registry=r)

    def _add_latency_metrics(self, r: CollectorRegistry) -> None:
        self.ttft = Histogram(
            "appliance_time_to_first_token_seconds", "From the arrival of the HTTP request "
            "to the first generated token (queue, guards and prefill included).",
            buckets=LATENCY_BUCKETS, registry=r)
        self.itl = Histogram(
            "appliance_inter_token_latency_seconds", "Gap between successive generated "
            "tokens as the request sees them (a chunk of k tokens counts k gaps of 1/k).",
            buckets=TOKEN_GAP_BUCKETS, registry=r)
        self.queue_wait = Histogram(
            "appliance_queue_wait_seconds", "Time spent in admission (rate limits and the "
            "queue for a decoding slot).", buckets=LATENCY_BUCKETS, registry=r)
        self.prefill = Histogram(
            "appliance_prefill_seconds", "From the engine scheduling a sequence to its first "
            "token (prompt decoding).", buckets=LATENCY_BUCKETS, registry=r)
        self.guard_seconds = Histogram(
            "appliance_guard_seconds", "Time spent in one guard.", ["guard", "direction"],
            buckets=GUARD_BUCKETS, registry=r)
        self.holdback = Histogram(
            "appliance_output_holdback_seconds", "How long the output rail held streamed "
            "text back before releasing it.", buckets=GUARD_BUCKETS, registry=r)

    def _add_token_metrics(self, r: CollectorRegistry) -> None:
        self.tokens = Counter("appliance_tokens_total", "Tokens processed, by direction.",
                              ["direction"], registry=r)
        self.tokens_per_request = Histogram(
            "appliance_tokens_per_request", "Tokens of one request, by direction.",
            ["direction"], buckets=TOKEN_COUNT_BUCKETS, registry=r)
        # Children resolved once (``labels()`` costs microseconds on every call).
        self._tokens = {d: self.tokens.labels(d) for d in TOKEN_DIRECTIONS}
        self._tokens_per_request = {d: self.tokens_per_request.labels(d)
                                    for d in TOKEN_DIRECTIONS}

    def _add_admission_and_guard_metrics(self, r: CollectorRegistry) -> None:
        self.rate_limited = Counter(
            "appliance_rate_limited_total", "Requests refused with 429, by API key and by "
            "the limit hit (requests, tokens, concurrency).", ["key", "kind"], registry=r)
        self.overloaded = Counter(
            "appliance_overload_rejections_total", "Requests refused with 503 "
            "server_overloaded (queue full, wait too long, draining).", registry=r)
        self.guard_verdicts = Counter(
            "appliance_guard_verdicts_total", "Guard verdicts.",
            ["guard", "label", "action", "direction"], registry=r)

    def _add_cache_and_memory_metrics(self, r: CollectorRegistry) -> None:
        self.cache_lookups = Counter(
            "appliance_cache_lookups_total", "Response-cache lookups by result "
            "(hit-exact, hit-semantic, miss, bypass).", ["result"], registry=r)
        self.memory_entries = Gauge("appliance_memory_entries", "Memory entries, by scope.",
                                    ["scope"], registry=r)
        self.memory_store_bytes = Gauge("appliance_memory_store_bytes",
                                        "Bytes used by the memory store.", registry=r)
        self.memory_ratio = Histogram(
            "appliance_memory_to_response_token_ratio", "Memory tokens injected into a "
            "prompt / tokens of the response.", buckets=RATIO_BUCKETS, registry=r)

    # -- exposition ----------------------------------------------------------------------

    def render(self) -> bytes:
        return generate_latest(self.registry)

    # -- per request (the web layer, once per request) -----------------------------------

    def observe_request(self, trace: RequestTrace, endpoint: str) -> None:
        status = trace.status if trace.status is not None else 0
        self.requests.labels(endpoint, str(status)).inc()
        if trace.finished_s is not None:
            self.request_seconds.observe(trace.finished_s)
        if trace.error_type is not None:
            self.errors.labels(trace.error_type).inc()
            if trace.rate_limit_kind is not None:
                key = (trace.key_name or "") if self._key_labels else ANY_KEY
                self.rate_limited.labels(key, trace.rate_limit_kind).inc()
            elif trace.error_type == "server_overloaded":
                self.overloaded.inc()
        if trace.queue_wait_s is not None:
            self.queue_wait.observe(trace.queue_wait_s)
        if trace.first_token_s is not None:
            self.ttft.observe(trace.first_token_s)
        if trace.prefill_s is not None:
            self.prefill.observe(trace.prefill_s)
        observe_gap = self.itl.observe
        for gap in trace.token_gaps_s:
            observe_gap(gap)
        for check in trace.guard_checks:
            self.observe_guard(check.guard, check.direction, check.ms / 1000.0)
            self.count_guard_verdict(check.guard, check.label, check.action, check.direction)
        for held in trace.holdback_s:
            self.observe_holdback(held)
        if trace.cache is not None:
            self.count_cache_lookup(trace.cache)
        if trace.memory_tokens and trace.completion_tokens:
            self.observe_memory_ratio(trace.memory_tokens / trace.completion_tokens)
        self.engines.observe(trace)
        if trace.prompt_tokens or trace.completion_tokens:
            for direction, n in (("prompt", trace.prompt_tokens),
                                 ("completion", trace.completion_tokens),
                                 ("cached", trace.cached_tokens),
                                 ("memory", trace.memory_tokens)):
                if n:
                    self._tokens[direction].inc(n)
                self._tokens_per_request[direction].observe(n)

    # -- one series at a time ------------------------------------------------------------

    def observe_guard(self, guard: str, direction: str, seconds: float) -> None:
        self.guard_seconds.labels(guard, direction).observe(seconds)

    def count_guard_verdict(self, guard: str, label: str, action: str, direction: str) -> None:
        self.guard_verdicts.labels(guard, label, action, direction).inc()

    def observe_holdback(self, seconds: float) -> None:
        self.holdback.observe(seconds)

    def count_cache_lookup(self, result: str) -> None:
        self.cache_lookups.labels(result).inc()

    def set_memory_entries(self, scope: str, n: int) -> None:
        self.memory_entries.labels(scope).set(n)

    def set_memory_store_bytes(self, n: int) -> None:
        self.memory_store_bytes.set(n)

    def observe_memory_ratio(self, ratio: float) -> None:
        self.memory_ratio.observe(ratio)
