"""`appliance bench`: a load test for any OpenAI-compatible endpoint (a client; aiohttp only).

Drives streamed chat completions at each concurrency level and reports per level: requests
ok / errors by status, aggregate output tokens/s, TTFT and inter-token latency percentiles
and end-to-end latency, checked against success criteria.

Errors are counted by HTTP status; ``connection`` is a request that got no response at
all and ``stream`` one whose 200 stream carried an error event or ended without
``[DONE]``. The built-in prompt sets number each request's user message, so a response
cache cannot answer a repeated request; a FILE's rows are sent as they are.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

PROMPT_SETS: dict[str, list[str]] = {
    "short": [
        "Write two sentences about the sea.", "Describe a forest in the morning.",
        "What is a good breakfast?", "Explain why the sky is blue.",
        "Give three tips for sleeping well.", "Describe a train journey.",
        "What makes a good library?", "Write a short poem about rain.",
    ],
}
SHARED_SYSTEM = (
    "You are the assistant of a small community clinic. Answer politely and briefly. "
    "Never give a diagnosis; suggest seeing a clinician for anything urgent. The clinic is "
    "open Monday to Friday from eight to six and on Saturday mornings. Parking is behind the "
    "building. Bring your insurance card and a list of your medicines to every visit. "
) * 4 + (
    "Appointments can be booked by phone or at the front desk; please arrive ten minutes "
    "early, and tell the staff if you need an interpreter, a wheelchair or a quiet room. "
)  # about 300 tokens (SmolLM2's tokenizer: 299)
CRITERIA_DEFAULTS = {"ttft_p95": 2.0, "itl_p95": 0.1, "error_rate": 0.01}


@dataclass
class RequestResult:
    ok: bool
    status: str  # "200", another HTTP status, "connection" or "stream"
    ttft: float = 0.0
    e2e: float = 0.0
    tokens: int = 0
    gaps: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class LevelReport:
    concurrency: int
    requests: int
    ok: int
    errors: dict[str, int]
    tokens_per_s: float
    ttft_p50: float
    ttft_p95: float
    ttft_p99: float
    itl_p50: float
    itl_p95: float
    itl_p99: float
    e2e_p50: float
    e2e_p95: float
    wall_s: float
    passed: bool
    failed: tuple[str, ...] = ()  # the criteria missed: "ttft_p95", "itl_p95", "error_rate"


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def load_prompts(name: str) -> list[list[dict[str, str]]]:
    if name == "shared-system":
        return [[{"role": "system", "content": SHARED_SYSTEM}, {"role": "user", "content": p}]
                for p in PROMPT_SETS["short"]]
    if name in PROMPT_SETS:
        return [[{"role": "user", "content": p}] for p in PROMPT_SETS[name]]
    path = Path(name)
    if not path.is_file():
        raise SystemExit(f"appliance bench: unknown prompt set {name!r} (short, "
                         f"shared-system, or a JSONL file of {{\"messages\": [...]}} rows)")
    prompts: list[list[dict[str, str]]] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            prompts.append(row["messages"] if "messages" in row
                           else [{"role": "user", "content": row["prompt"]}])
        except (ValueError, KeyError, TypeError) as exc:
            raise SystemExit(f"appliance bench: {path}:{n}: expected a JSON object with "
                             f"\"messages\" or \"prompt\" ({exc})") from None
    if not prompts:
        raise SystemExit(f"appliance bench: {path} holds no prompts")
    return prompts


def _numbered(messages: list[dict[str, str]], i: int) -> list[dict[str, str]]:
    """The same conversation with the request number appended to its last message."""
    last = messages[-1]
    # (a bare number: "(request 3)" after a short instruction reads as an injection to the
    # guard network often enough to refuse a benchmark's requests)
    return [*messages[:-1], {**last, "content": f"{last['content']} ({i})"}]


async def _one(session: aiohttp.ClientSession, url: str, model: str,
               messages: list[dict[str, str]], max_tokens: int, headers: dict[str, str],
               temperature: float) -> RequestResult:
    body = {"model": model, "messages": messages, "max_tokens": max_tokens,
            "temperature": temperature, "stream": True, "stream_options": {"include_usage": True},
            "ignore_eos": True}
    t0 = time.perf_counter()
    try:
        async with session.post(url, json=body, headers=headers) as resp:
            if resp.status != 200:
                await resp.read()
                return RequestResult(False, str(resp.status), e2e=time.perf_counter() - t0)
            result = RequestResult(True, "200")
            last = None
            chunks = 0
            usage_tokens = None
            done = False
            async for raw in resp.content:
                line = raw.strip()
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    done = True
                    break
                obj = json.loads(data)
                if not isinstance(obj, dict) or "error" in obj:
                    break
                if obj.get("usage"):
                    usage_tokens = obj["usage"].get("completion_tokens")
                choices = obj.get("choices") or []
                if choices and (choices[0].get("delta") or {}).get("content"):
                    now = time.perf_counter()
                    if last is None:
                        result.ttft = now - t0
                    else:
                        result.gaps.append(now - last)
                    last = now
                    chunks += 1
            result.e2e = time.perf_counter() - t0
            if not done:
                return RequestResult(False, "stream", e2e=result.e2e)
            result.tokens = usage_tokens if usage_tokens is not None else chunks
            return result
    except (aiohttp.ClientPayloadError, ValueError):
        return RequestResult(False, "stream", e2e=time.perf_counter() - t0)
    except (TimeoutError, aiohttp.ClientError):
        return RequestResult(False, "connection", e2e=time.perf_counter() - t0)


async def run_level(url: str, model: str, concurrency: int, requests: int, max_tokens: int,
                    prompts: list[list[dict[str, str]]], api_key: str | None,
                    criteria: dict[str, float], progress: bool = True,
                    numbered: bool = False, allow_cache: bool = False,
                    temperature: float = 0.0) -> LevelReport:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    if not allow_cache:  # a load test measures generation, not a response cache's replay
        headers["Cache-Control"] = "no-cache"
    timeout = aiohttp.ClientTimeout(total=None, sock_read=600)
    # A fresh connection per request: some servers (llama-server) close streamed
    # connections, and a reused stale one would count as an error.
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    results: list[RequestResult] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)

    async def worker(session: aiohttp.ClientSession) -> None:
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            messages = prompts[i % len(prompts)]
            if numbered:
                messages = _numbered(messages, i)
            results.append(await _one(session, url, model, messages, max_tokens, headers,
                                       temperature))
            if progress:
                done = len(results)
                bar = "#" * (30 * done // requests)
                print(f"\r  c={concurrency:<3} [{bar:<30}] {done}/{requests}", end="",
                      file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    if progress:
        print(file=sys.stderr)
    ok = [r for r in results if r.ok]
    errors = Counter(r.status for r in results if not r.ok)
    ttft = [r.ttft for r in ok]
    gaps = [g for r in ok for g in r.gaps]
    e2e = [r.e2e for r in ok]
    tokens = sum(r.tokens for r in ok)
    err_rate = (len(results) - len(ok)) / max(len(results), 1)
    failed = tuple(name for name, missed in (
        ("ttft_p95", not ok or not percentile(ttft, 0.95) < criteria["ttft_p95"]),
        # Requests of one token each have no inter-token gaps: nothing to miss.
        ("itl_p95", bool(gaps) and not percentile(gaps, 0.95) < criteria["itl_p95"]),
        ("error_rate", not err_rate < criteria["error_rate"])) if missed)
    return LevelReport(
        concurrency=concurrency, requests=len(results), ok=len(ok), errors=dict(errors),
        tokens_per_s=tokens / wall if wall else 0.0,
        ttft_p50=percentile(ttft, 0.5), ttft_p95=percentile(ttft, 0.95),
        ttft_p99=percentile(ttft, 0.99), itl_p50=percentile(gaps, 0.5),
        itl_p95=percentile(gaps, 0.95), itl_p99=percentile(gaps, 0.99),
        e2e_p50=percentile(e2e, 0.5), e2e_p95=percentile(e2e, 0.95), wall_s=wall,
        passed=bool(ok) and not failed, failed=failed,
    )


def format_table(reports: Sequence[LevelReport]) -> str:
    head = ("| conc | ok/req | errors | tok/s | TTFT p50 | p95 | p99 (ms) | ITL p50 | p95 | "
            "p99 (ms) | e2e p50 | p95 (s) | pass |")
    rows = [head, "|" + "---|" * 13]
    for r in reports:
        errs = ",".join(f"{k}:{v}" for k, v in r.errors.items()) or "-"
        rows.append(
            f"| {r.concurrency} | {r.ok}/{r.requests} | {errs} | {r.tokens_per_s:.1f} | "
            f"{r.ttft_p50 * 1e3:.0f} | {r.ttft_p95 * 1e3:.0f} | {r.ttft_p99 * 1e3:.0f} | "
            f"{r.itl_p50 * 1e3:.1f} | {r.itl_p95 * 1e3:.1f} | {r.itl_p99 * 1e3:.1f} | "
            f"{r.e2e_p50:.2f} | {r.e2e_p95:.2f} | "
            f"{'yes' if r.passed else 'NO ' + ','.join(r.failed)} |")
    return "\n".join(rows)


async def run(url: str, model: str, levels: Sequence[int], requests: int | None,
              max_tokens: int, prompt_set: str, api_key: str | None,
              criteria: dict[str, float], progress: bool = True,
              allow_cache: bool = False, temperature: float = 0.0) -> list[LevelReport]:
    prompts = load_prompts(prompt_set)
    numbered = prompt_set in PROMPT_SETS or prompt_set == "shared-system"
    endpoint = url.rstrip("/")
    if not endpoint.endswith("/chat/completions"):
        endpoint += "/chat/completions" if endpoint.endswith("/v1") else "/v1/chat/completions"
    reports = []
    for c in levels:
        n = requests if requests is not None else max(2 * c, 8)
        reports.append(await run_level(endpoint, model, c, n, max_tokens, prompts, api_key,
                                       criteria, progress, numbered, allow_cache,
                                       temperature))
    return reports


def parse_levels(text: str) -> list[int]:
    try:
        levels = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        levels = []
    if not levels or min(levels) < 1:
        raise SystemExit(f"appliance bench: --concurrency wants positive integers separated "
                         f"by commas, e.g. 1,4,16,64 (got {text!r})")
    return levels


def main(args: Any) -> int:
    levels = parse_levels(str(args.concurrency))
    criteria = {"ttft_p95": args.ttft_p95, "itl_p95": args.itl_p95,
                "error_rate": args.max_error_rate}
    reports = asyncio.run(run(args.url, args.model, levels, args.requests, args.max_tokens,
                              args.prompt_set, args.api_key, criteria,
                              allow_cache=args.allow_cache, temperature=args.temperature))
    print(format_table(reports))
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in reports], indent=2))
    return 0 if all(r.passed for r in reports) else 1
