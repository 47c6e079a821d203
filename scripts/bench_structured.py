"""Does a grammar-constrained request slow its batch mates? Aggregate tokens/s of 16
concurrent streams, all unconstrained, then with 4 of them JSON-schema constrained.

Each of the 16 clients sends streamed chat requests back to back for ``--seconds``; a
constrained client asks for a JSON object of a bounded schema (``response_format``
json_schema), the others for free text (``--max-tokens``). Aggregate tokens/s is every
completion token generated in the window over its length (closed loop, so both runs keep
16 sequences in the batch). The target: the mixed run within 10% of the
unconstrained one.

    .venv/bin/python scripts/bench_structured.py              # starts its own server
    .venv/bin/python scripts/bench_structured.py --url http://127.0.0.1:8080/v1

Its own server: the default model, 16 slots, the response cache off, guards off unless
``--guards`` (the output rail's classifier would add the same cost to both runs, and noise).
Prints both runs, the ratio, and the machine's load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SCHEMA = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "title": {"type": "string", "maxLength": 40},
        "year": {"type": "integer"},
        "in_print": {"type": "boolean"},
        "authors": {"type": "array", "minItems": 1, "maxItems": 2, "items": {
            "type": "object", "additionalProperties": False,
            "properties": {"name": {"type": "string", "maxLength": 30},
                           "country": {"enum": ["FR", "DE", "JP", "US", "BR"]}},
            "required": ["name", "country"]}},
        "genre": {"anyOf": [{"enum": ["novel", "poetry", "essay"]}, {"type": "null"}]}},
    "required": ["title", "year", "in_print", "authors", "genre"]}
PROMPTS = ["Write two sentences about the sea.", "Describe a forest in the morning.",
           "Explain why the sky is blue.", "Describe a train journey."]


@dataclass
class Tally:
    tokens: dict[str, int] = field(default_factory=lambda: {"free": 0, "json": 0})
    requests: dict[str, int] = field(default_factory=lambda: {"free": 0, "json": 0})
    invalid: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _one(client: openai.OpenAI, kind: str, n: int, max_tokens: int) -> tuple[int, bool]:
    kwargs: dict[str, Any] = {}
    if kind == "json":
        kwargs["response_format"] = {"type": "json_schema", "json_schema": {
            "name": "book", "schema": SCHEMA, "strict": True}}
        messages = [{"role": "user", "content": f"Describe book number {n} as JSON."}]
    else:
        messages = [{"role": "user", "content": PROMPTS[n % len(PROMPTS)] + f" ({n})"}]
    stream = client.chat.completions.create(
        model="default", messages=messages, max_tokens=max_tokens if kind == "free" else 400,
        temperature=1.0, seed=n, stream=True, stream_options={"include_usage": True},
        **kwargs)
    text, tokens = [], 0
    for chunk in stream:
        if chunk.choices:
            text.append(chunk.choices[0].delta.content or "")
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    ok = True
    if kind == "json":
        try:
            json.loads("".join(text))
        except ValueError:
            ok = False
    return tokens, ok


def run(url: str, constrained: int, seconds: float, max_tokens: int) -> dict[str, Any]:
    tally, stop = Tally(), time.monotonic() + seconds
    client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=600)

    def worker(i: int) -> None:
        kind, n = ("json" if i < constrained else "free"), i * 1000
        while time.monotonic() < stop:
            tokens, ok = _one(client, kind, n, max_tokens)
            n += 1
            with tally.lock:
                tally.tokens[kind] += tokens
                tally.requests[kind] += 1
                tally.invalid += not ok

    start = time.monotonic()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - start  # (requests in flight at the deadline are finished)
    total = sum(tally.tokens.values())
    return {"constrained": constrained, "wall_s": round(wall, 1),
            "tokens_per_s": round(total / wall, 2), "tokens": tally.tokens,
            "requests": tally.requests, "invalid_json": tally.invalid}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", help="an OpenAI-compatible /v1 URL (default: start a server)")
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--guards", action="store_true")
    args = ap.parse_args()
    server = None
    url = args.url
    if url is None:
        from tests.conftest import make_settings, start_server
        server = start_server(make_settings(Path(tempfile.mkdtemp()), parallel=16,
                                            ctx_size=1024, guards=args.guards))
        url = server.base_url + "/v1"
    load_before = os.getloadavg()
    try:
        free = run(url, 0, args.seconds, args.max_tokens)
        mixed = run(url, 4, args.seconds, args.max_tokens)
    finally:
        if server is not None:
            server.close()
    print(json.dumps({"unconstrained": free, "mixed_4_of_16": mixed,
                      "ratio": round(mixed["tokens_per_s"] / free["tokens_per_s"], 3),
                      "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
                     indent=2))


if __name__ == "__main__":
    main()
