"""The embedded engine's configuration and the statistics it publishes (read by other
threads: metrics, /ready, the benchmarks)."""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class EngineConfig:
    model_path: Path
    parallel: int
    ctx_size: int  # per sequence
    batch_size: int
    n_threads: int
    n_gpu_layers: int = 0
    split_mode: str = "layer"  # across several GPUs: layer, row or none (main_gpu only)
    main_gpu: int = 0
    prefix_reuse_min: int = 16  # 0: prefix reuse off
    default_seed: int = -1
    name: str = "embedded"  # in metrics, logs and /ready


# Upper bounds (inclusive) of the decode batch-size histogram, in tokens per llama_decode.
BATCH_SIZE_BOUNDS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)


@dataclass
class EngineStats:
    """Read from other threads without locking (plain counters and gauges)."""

    running: int = 0
    waiting: int = 0
    steps: int = 0  # llama_decode calls
    generated_tokens: int = 0
    reused_tokens: int = 0  # prompt tokens whose KV cells were kept or copied, not decoded
    prefilled_tokens: int = 0  # prompt tokens decoded
    kv_cells_used: int = 0
    kv_cells_total: int = 0
    batch_sizes: deque[int] = field(default_factory=lambda: deque(maxlen=1024))  # the last
    # Steps per batch size, one count per BATCH_SIZE_BOUNDS bound then +Inf (not cumulative).
    batch_size_counts: list[int] = field(
        default_factory=lambda: [0] * (len(BATCH_SIZE_BOUNDS) + 1))
    batch_size_sum: int = 0
    grammars_parsed: int = 0  # distinct grammars parsed (each is cloned for its sequences)

    def count_batch(self, n: int) -> None:
        """One decode step of ``n`` tokens (engine thread; a bisect and two additions)."""
        self.batch_size_counts[bisect.bisect_left(BATCH_SIZE_BOUNDS, n)] += 1
        self.batch_size_sum += n
