"""Latency of the response cache and of memory retrieval at 100,000 rows.

    python scripts/bench_memory_cache.py [--entries 100000] [--lookups 2000] [--http 300]

1. cache lookup: ``ResponseCache.lookup`` with the last turn's embedding supplied (the
   guard pipeline computes it once per request): an exact hit, and a semantic lookup (an
   exact miss, a search of the scope's hnswlib index, a candidate check in SQLite), with
   all ``--entries`` rows in one scope (the worst case for the index);
2. a cache hit end to end over HTTP: the real server on loopback, the same greedy chat
   request repeated on one keep-alive connection;
3. memory retrieval: ``MemoryStore.recall`` (4 recent session turns, then a search of the
   user's index and the global one for 4 more) with ``--entries`` memories in the user's
   scope.

Rows get random clustered unit vectors (encoding 100,000 texts with MiniLM would take
most of an hour on two cores); the encoder's own time per query is reported separately.
Prints a Markdown table. Run it niced on a busy machine; the figures are only meaningful
on an idle one.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from appliance.cache.keys import fingerprint
from appliance.cache.response import CacheConfig, CacheDirectives, CacheQuery, ResponseCache
from appliance.encoder.sentence import Encoder
from appliance.memory.memories import MemoryConfig, MemoryStore
from appliance.store.db import Database
from appliance.store.vectors import VectorIndex, to_blob

DIM = 384
Rows = npt.NDArray[np.float32]


def clustered(rng: np.random.Generator, n: int) -> Rows:
    centres = rng.normal(size=(max(1, n // 50), DIM)).astype(np.float32)
    x = (centres[rng.integers(0, len(centres), n)]
         + 0.6 * rng.normal(size=(n, DIM))).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000.0


async def timed(n: int, fn: Callable[[int], Awaitable[object]]) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        await fn(i)
        out.append(time.perf_counter() - t0)
    return out


def row(name: str, samples: list[float], target: str) -> str:
    return (f"| {name} | {len(samples)} | {pct(samples, 0.5):.2f} ms | "
            f"{pct(samples, 0.95):.2f} ms | {pct(samples, 0.99):.2f} ms | {target} |")


async def bench_cache(data: Path, vectors: Rows, queries: Rows, lookups: int) -> list[str]:
    db = Database(data / "bench.db")
    fp = fingerprint("0" * 64, "template", "policy")
    scope = "key:1/user:bench"
    now = time.time()

    def fill(conn: object) -> None:
        conn.conn.executemany(  # type: ignore[attr-defined]
            "INSERT INTO cache_entries (scope, exact_key, context, fingerprint, vector, "
            "kind, text, finish_reason, prompt_tokens, completion_tokens, created_at, "
            "expires_at, last_used_at) VALUES (?, ?, 'ctx', ?, ?, 'chat', 'answer', 'stop', "
            "10, 5, ?, ?, ?)",
            [(scope, f"exact-{i}", fp, to_blob(v), now, now + 86400, now)
             for i, v in enumerate(vectors)])

    await asyncio.to_thread(db.write_sync, fill)
    index = VectorIndex(db, "cache_entries", data / "vectors" / "cache")
    t0 = time.perf_counter()
    await asyncio.to_thread(index.open)
    build = time.perf_counter() - t0
    cache = ResponseCache(db, index, _NoEncoder(), CacheConfig(max_entries=len(vectors) + 1))
    await cache.adopt(fp)

    def q(i: int, exact: bool) -> CacheQuery:
        return CacheQuery(scope=scope, exact_key=f"exact-{i}" if exact else f"none-{i}",
                          context="ctx", fingerprint=fp, kind="chat", text="q",
                          directives=CacheDirectives())

    await timed(50, lambda i: cache.lookup(q(i, True), queries[i % len(queries)]))  # warm
    exact = await timed(lookups, lambda i: cache.lookup(q(i, True), queries[i % len(queries)]))
    semantic = await timed(lookups,
                           lambda i: cache.lookup(q(i, False), queries[i % len(queries)]))
    t0 = time.perf_counter()
    saved = await index.asave()
    save = time.perf_counter() - t0
    await index.aclose()
    t0 = time.perf_counter()
    again = VectorIndex(db, "cache_entries", data / "vectors" / "cache")
    report = await asyncio.to_thread(again.open)
    load = time.perf_counter() - t0
    await again.aclose()
    await db.aclose()
    return [row(f"cache lookup, exact hit ({len(vectors):,} entries)", exact, "≤ 2 ms p95"),
            row(f"cache lookup, semantic ({len(vectors):,} entries, one scope)", semantic,
                "≤ 2 ms p95"),
            f"| index rebuild from SQLite / save ({saved} file) / load "
            f"({report.loaded} loaded) | 1 | {build:.1f} s / {save:.1f} s / {load:.1f} s "
            "| | | |"]


class _NoEncoder:
    def encode_one(self, text: str) -> Rows:
        raise AssertionError("the benchmark supplies every vector")


class _Counts:
    def encode(self, texts: list[str]) -> Rows:
        raise AssertionError("the benchmark supplies every vector")

    def token_counts(self, texts: list[str]) -> list[int]:
        return [len(t.split()) + 2 for t in texts]


async def bench_memory(data: Path, vectors: Rows, queries: Rows, lookups: int) -> list[str]:
    db = Database(data / "memory.db")
    now = time.time()

    def fill(conn: object) -> None:
        conn.conn.executemany(  # type: ignore[attr-defined]
            "INSERT INTO memories (key_id, tier, user, session_id, kind, role, content, "
            "tokens, scope, vector, created_at, last_accessed_at) VALUES (1, 'user', 'bench', "
            "'', 'note', 'note', ?, 12, 'user:1/bench', ?, ?, ?)",
            [(f"memory number {i} about something", to_blob(v), now, now)
             for i, v in enumerate(vectors)])
        conn.conn.executemany(  # type: ignore[attr-defined]
            "INSERT INTO memories (key_id, tier, user, session_id, kind, role, content, "
            "tokens, scope, created_at, last_accessed_at) VALUES (1, 'session', 'bench', "
            "'s1', 'turn', ?, ?, 10, '', ?, ?)",
            [("user" if i % 2 == 0 else "assistant", f"turn {i}", now, now)
             for i in range(40)])

    await asyncio.to_thread(db.write_sync, fill)
    index = VectorIndex(db, "memories", data / "vectors" / "memories")
    await asyncio.to_thread(index.open)
    memory = MemoryStore(db, index, _Counts(), MemoryConfig(
        min_similarity=0.0, max_entries=len(vectors) * 2, session_turns=4,
        inject_max_entries=8))
    await timed(50, lambda i: memory.recall(1, "bench", "s1", "q",
                                            vector=queries[i % len(queries)]))
    samples = await timed(lookups, lambda i: memory.recall(1, "bench", "s1", "q",
                                                           vector=queries[i % len(queries)]))
    await index.aclose()
    await db.aclose()
    return [row(f"memory retrieval ({len(vectors):,} memories, one user)", samples,
                "≤ 5 ms p95")]


def bench_encoder(n: int) -> list[str]:
    encoder = Encoder.from_manifest()
    texts = [f"What is the capital of country number {i}?" for i in range(n)]
    encoder.encode_one(texts[0])
    samples = []
    for t in texts:
        t0 = time.perf_counter()
        encoder.encode_one(t)
        samples.append(time.perf_counter() - t0)
    return [row("MiniLM encoding of one short question (not in the lookups above)", samples,
                "")]


def bench_http(requests: int) -> list[str]:
    import aiohttp

    from tests.conftest import make_settings, start_server

    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(make_settings(Path(tmp), parallel=2, ctx_size=512,
                                            cache_enabled=True))
        try:
            body = {"model": "default", "temperature": 0, "max_tokens": 32,
                    "messages": [{"role": "user", "content": "What is the capital of France?"}]}
            url = server.base_url + "/v1/chat/completions"

            async def run() -> list[float]:
                out = []
                async with aiohttp.ClientSession() as http:
                    for i in range(requests + 1):
                        t0 = time.perf_counter()
                        async with http.post(url, json=body) as r:
                            await r.read()
                            status = r.headers.get("X-Cache")
                        if i > 0:  # the first one fills the cache
                            assert status == "hit-exact", status
                            out.append(time.perf_counter() - t0)
                return out

            samples = asyncio.run(run())
        finally:
            server.close()
    return [row("cache hit end to end over HTTP (non-streamed chat)", samples,
                "≤ 15 ms p95")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--lookups", type=int, default=2000)
    parser.add_argument("--http", type=int, default=300, help="requests (0: skip)")
    parser.add_argument("--parts", default="cache,memory,encoder,http",
                        help="comma-separated subset of cache,memory,encoder,http")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    rng = np.random.default_rng(11)
    both = clustered(rng, args.entries + 500)
    vectors, queries = both[:args.entries], both[args.entries:]
    lines = ["| what | n | p50 | p95 | p99 | target |", "|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        if "cache" in parts:
            lines += asyncio.run(bench_cache(Path(tmp), vectors, queries, args.lookups))
        if "memory" in parts:
            lines += asyncio.run(bench_memory(Path(tmp), vectors, queries, args.lookups))
    if "encoder" in parts:
        lines += bench_encoder(200)
    if args.http and "http" in parts:
        lines += bench_http(args.http)
    print("\n".join(lines))
    print(f"\n{time.strftime('%Y-%m-%d %H:%M')}, {args.entries:,} rows")


if __name__ == "__main__":
    main()
