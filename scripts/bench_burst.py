"""Where a burst's time to first token goes: 16 short unique prompts at once.

    .venv/bin/python scripts/bench_burst.py [--rounds 5] [--burst 16] [--out F.json]

Interleaved rounds of: the appliance (guards on), the appliance (guards off) and
llama-server (same model file, threads and slots as `make bench`; each started afresh per
round). Per round and server: a warm-up burst, then ``--burst`` streamed requests sent
at once (short unique prompts, 64 tokens, temperature 0.7, ``ignore_eos``). Measured:

- client: the time to the first content chunk, as received;
- the appliance, from its access log (matched by ``X-Request-Id``): the admission queue's
  wait, the input rail's time, the engine's prefill (from getting a slot to the first token
  sampled) and its own TTFT (to the first chunk released); what is left (TTFT less queue and
  prefill) is the rest of the request path: the input rail, parsing, prompt, tokenising,
  waiting for a slot and for a step, the first output window. (The log's ``guard_ms`` adds
  the output windows' checks over the whole answer, so it is reported, not subtracted.)
- llama-server, from its final chunk's ``timings``: ``prompt_ms`` (its prefill).

Medians over the rounds of each round's p50 and p95.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from bench_side_by_side import NAMES, Setup, ensure_llama_cpp, free_port, running, server_argv
from llama_build import CACHE, native_build_params

from appliance import config
from appliance.engine.models import ModelStore
from appliance.tools.bench import PROMPT_SETS, _numbered, percentile

STAGES = ("queue_ms", "guard_ms", "prefill_ms", "ttft_ms")


async def one(session: aiohttp.ClientSession, base: str, prompt: str) -> dict[str, Any]:
    body = {"model": "default", "messages": [{"role": "user", "content": prompt}],
            "max_tokens": 64, "temperature": 0.7, "stream": True, "ignore_eos": True}
    t0 = time.perf_counter()
    row: dict[str, Any] = {"ttft": None, "timings": None}
    async with session.post(base + "/v1/chat/completions", json=body,
                            headers={"Cache-Control": "no-cache"}) as resp:
        row["request_id"] = resp.headers.get("X-Request-Id")
        row["status"] = resp.status
        async for raw in resp.content:
            line = raw.strip()
            if not line.startswith(b"data:") or line[5:].strip() == b"[DONE]":
                continue
            obj = json.loads(line[5:])
            choices = obj.get("choices") or []
            if row["ttft"] is None and choices and (choices[0].get("delta") or {}).get("content"):
                row["ttft"] = time.perf_counter() - t0
            if obj.get("timings"):
                row["timings"] = obj["timings"]
    return row


async def burst(base: str, n: int, round_no: int) -> list[dict[str, Any]]:
    prompts = PROMPT_SETS["short"]
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        def jobs(first: int) -> list[Any]:
            return [one(session, base, _numbered([{"role": "user", "content": prompts[i % 8]}],
                                                 first + i)[0]["content"]) for i in range(n)]

        # A first burst warms the server up (its first batch of n sequences allocates and
        # touches memory a later one reuses); the second is measured.
        await asyncio.gather(*jobs(1000 * round_no + 500))
        return list(await asyncio.gather(*jobs(1000 * round_no)))


def access_log(path: Path) -> dict[str, dict[str, Any]]:
    rows = {}
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{") and '"route"' in line and '"ttft_ms"' in line:
            row = json.loads(line)
            rows[row.get("request_id")] = row
    return rows


def summarise(target: str, rows: list[dict[str, Any]], log: dict[str, dict[str, Any]]
              ) -> dict[str, float]:
    p = percentile
    ttft = [r["ttft"] * 1e3 for r in rows if r["ttft"] is not None]
    out = {"client_ttft_p50": p(ttft, 0.5), "client_ttft_p95": p(ttft, 0.95),
           "ok": float(sum(r["status"] == 200 for r in rows))}
    if target == "B":
        prompt_ms = [r["timings"]["prompt_ms"] for r in rows if r["timings"]]
        out.update(prefill_ms_p50=p(prompt_ms, 0.5), prefill_ms_p95=p(prompt_ms, 0.95))
        return out
    logged = [log[r["request_id"]] for r in rows if r["request_id"] in log]
    for stage in STAGES:
        values = [float(x[stage] or 0.0) for x in logged]
        out[f"{stage}_p50"], out[f"{stage}_p95"] = p(values, 0.5), p(values, 0.95)
    rest = [float(x["ttft_ms"] or 0) - float(x["queue_ms"] or 0) - float(x["prefill_ms"] or 0)
            for x in logged]
    out["rest_ms_p50"], out["rest_ms_p95"] = p(rest, 0.5), p(rest, 0.95)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--burst", type=int, default=16)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    settings = config.load()
    store = ModelStore(settings.manifest, settings.models_dir)
    model = store.location(store.resolve(settings.model))
    bins = ensure_llama_cpp(*native_build_params(), jobs=args.threads)
    logdir = Path(tempfile.mkdtemp(prefix="burst-", dir=CACHE))
    setup = Setup(model, args.threads, 2048, 16, bins, None, settings.models_dir, logdir)
    results: dict[str, list[dict[str, float]]] = {"A": [], "G": [], "B": []}
    for r in range(args.rounds):
        for target in results:
            port = free_port()
            data = Path(tempfile.mkdtemp(prefix="data-", dir=logdir))
            logfile = logdir / f"{target}-{r}.log"
            argv, ready = server_argv(target, setup, port, data)
            with running(NAMES[target], argv, ready, port, logfile) as base:
                rows = asyncio.run(burst(base, args.burst, r))
            results[target].append(summarise(target, rows, access_log(logfile)))
            print(f"round {r + 1} {NAMES[target]}: "
                  + ", ".join(f"{k} {v:.0f}" for k, v in results[target][-1].items()),
                  flush=True)
    medians = {t: {k: statistics.median(x[k] for x in runs) for k in runs[0]}
               for t, runs in results.items()}
    print(json.dumps(medians, indent=1))
    if args.out is not None:
        args.out.write_text(json.dumps({"rounds": results, "medians": medians}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
