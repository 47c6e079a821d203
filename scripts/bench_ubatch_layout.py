"""A/B of the batch layout, without HTTP: one llama_decode of one token for each of N
sequences, their seq ids consecutive and ascending vs scattered (as least-recently-used slot
choice left them), alternating, medians.

With one KV stream per sequence (kv_unified = false, as the engine runs), llama.cpp cuts a
batch into ubatches of consecutive seq ids in batch order, one graph computation each.

    .venv/bin/python scripts/bench_ubatch_layout.py [REPETITIONS]
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from appliance import config
from appliance.engine.models import ModelStore
from appliance.engine.native import Batch, ContextConfig, LlamaContext, LlamaModel

LAYOUTS = {
    4: {"consecutive": [0, 1, 2, 3], "scattered": [12, 3, 8, 7],
        "scattered, ascending": [3, 7, 8, 12]},
    16: {"consecutive": list(range(16)), "shuffled": random.Random(1).sample(range(16), 16)},
}


def main() -> None:
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    settings = config.load()
    store = ModelStore(settings.manifest, settings.models_dir)
    model = LlamaModel(store.location(store.resolve(settings.model)))
    ctx = LlamaContext(model, ContextConfig(n_ctx=2048 * 16, n_seq_max=16, n_batch=512,
                                            n_threads=settings.n_threads, kv_unified=False))
    batch = Batch(512)
    pos = [0] * 16
    for s in range(16):  # a 32-token prompt in every sequence
        batch.clear()
        batch.add_span([100 + s + i for i in range(32)], 0, s, True)
        assert ctx.decode(batch) == 0
        pos[s] = 32
    for n, layouts in LAYOUTS.items():
        times: dict[str, list[float]] = {k: [] for k in layouts}
        for _ in range(reps):
            for name, seqs in layouts.items():
                batch.clear()
                for s in seqs:
                    batch.add(500 + pos[s] % 100, pos[s], s, True)
                    pos[s] += 1
                t0 = time.perf_counter()
                assert ctx.decode(batch) == 0
                times[name].append(time.perf_counter() - t0)
        print(f"{n} sequences: " + "; ".join(
            f"{k} {statistics.median(v) * 1e3:.1f} ms (min {min(v) * 1e3:.1f})"
            for k, v in times.items()), flush=True)
    ctx.close()
    model.close()


if __name__ == "__main__":
    main()
