"""Micro-benchmark of the instrumentation's cost: ``python -m appliance.tools.metrics_bench``.

What one request and one token cost in the code this issue adds, without HTTP and without
the model (the parts measured are exactly the ones run per request, per token and per
engine step):

* per request: a ``RequestTrace``, ``Metrics.observe_request`` and the access-log line
  (``access_fields`` + ``JsonFormatter`` + a handler writing to an in-memory stream);
* per token: ``RequestTrace.mark_tokens`` on the event loop, and the inter-token
  histogram observation at the request's end;
* per engine step: ``EngineStats.count_batch`` (engine thread);
* per scrape: ``Metrics.render`` with the engine collector.

It then relates them to decode time at 16 concurrent streams (a decode step of 16 tokens,
``--step-ms``, ~200 ms on the project's 2-core machine; docs/BENCHMARKS.md) for requests
of ``--tokens`` tokens. Audit appends are not included: they happen only for requests
with guard actions and cost one SQLite transaction on the writer thread.
"""

from __future__ import annotations

import argparse
import io
import logging
import statistics
import time
from collections.abc import Callable, Sequence

from appliance.engine.engine_config import EngineStats
from appliance.observability.logs import ACCESS_LOGGER, JsonFormatter, access_fields
from appliance.observability.metrics import EngineGauges, Metrics
from appliance.observability.trace import GuardAction, RequestTrace


def _per_call_us(fn: Callable[[], object], n: int, repeats: int = 5) -> float:
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter_ns() - t0) / n / 1e3)
    return statistics.median(runs)


def _finished_trace(tokens: int) -> RequestTrace:
    t = RequestTrace("0123456789abcdef0123456789abcdef", "/v1/chat/completions")
    t.key_name, t.status, t.queue_wait_s, t.first_token_s = "frontdesk", 200, 0.002, 0.25
    t.prefill_s, t.finished_s = 0.05, 12.0
    t.prompt_tokens, t.completion_tokens, t.cached_tokens = 120, tokens, 64
    t.guard_actions.append(GuardAction("pii", "input", "email", "redact", 0.2))
    return t


def measure(tokens: int = 64, n: int = 20_000) -> dict[str, float]:
    stats = EngineStats()
    metrics = Metrics(lambda: EngineGauges(16, 3, 0.4, list(stats.batch_size_counts),
                                           float(stats.batch_size_sum)))
    logger = logging.getLogger(ACCESS_LOGGER + ".bench")
    sink = io.StringIO()
    handler = logging.StreamHandler(sink)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    trace = _finished_trace(tokens)

    def request_metrics() -> None:
        fresh = RequestTrace("0123456789abcdef0123456789abcdef", "/v1/chat/completions")
        fresh.status = 200
        metrics.observe_request(trace, "/v1/chat/completions")

    def access_line() -> None:
        logger.info("%s %s %s", "POST", "/v1/chat/completions", 200,
                    extra={"fields": access_fields(trace, "POST", "/v1/chat/completions")})
        if sink.tell() > 1 << 22:
            sink.seek(0)
            sink.truncate()

    streaming = RequestTrace("x", "/v1/chat/completions")
    counter = iter(range(1, 1 << 62))

    def per_token() -> None:
        streaming.mark_tokens(next(counter))
        metrics.itl.observe(0.2)

    try:
        out = {
            "request_metrics_us": _per_call_us(request_metrics, n),
            "access_log_us": _per_call_us(access_line, n),
            "token_us": _per_call_us(per_token, n * 5),
            "step_us": _per_call_us(lambda: stats.count_batch(16), n * 5),
            "scrape_us": _per_call_us(metrics.render, max(n // 100, 50)),
        }
    finally:
        logger.removeHandler(handler)
    out["request_us"] = out["request_metrics_us"] + out["access_log_us"]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m appliance.tools.metrics_bench")
    parser.add_argument("--tokens", type=int, default=64, help="completion tokens/request")
    parser.add_argument("--streams", type=int, default=16, help="concurrent streams")
    parser.add_argument("--step-ms", type=float, default=200.0,
                        help="decode step time at that concurrency (ms)")
    parser.add_argument("-n", type=int, default=20_000, help="iterations per figure")
    args = parser.parse_args(argv)
    r = measure(args.tokens, args.n)
    # One decode step yields one token per stream; a stream ends every `tokens` steps.
    per_step_us = (args.streams * r["token_us"] + r["step_us"]
                   + args.streams / args.tokens * r["request_us"])
    share = per_step_us / (args.step_ms * 1e3)
    print(f"per request (trace + metrics + access log): {r['request_us']:.1f} µs "
          f"(metrics {r['request_metrics_us']:.1f}, access log {r['access_log_us']:.1f})")
    print(f"per token (mark_tokens + ITL observe):      {r['token_us']:.2f} µs")
    print(f"per engine step (batch-size count):         {r['step_us']:.2f} µs")
    print(f"per /metrics scrape:                        {r['scrape_us']:.0f} µs")
    print(f"at {args.streams} streams, {args.tokens} tokens/request, a {args.step_ms:.0f} ms "
          f"decode step: {per_step_us:.1f} µs of instrumentation per step = "
          f"{share * 100:.3f}% of decode time (must stay under 1%)")
    return 0 if share < 0.01 else 1


if __name__ == "__main__":
    raise SystemExit(main())
