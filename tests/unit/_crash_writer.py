"""Child process of the crash test: writes memories until it is killed.

Prints ``add <id>`` after each acknowledged write (the database write returned, so it was
committed with synchronous=FULL), ``deleting <id>`` before a deletion and ``del <id>`` once
it is acknowledged; saves
the vector index every few writes so that kills also land in the middle of saves.
Vectors are random (seeded per process): this exercises storage, not the encoder.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from appliance.memory.memories import MemoryStore
from appliance.store.db import Database
from appliance.store.vectors import VectorIndex


class _Counts:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        return [len(t.split()) + 2 for t in texts]

    def encode(self, texts: Sequence[str]) -> np.ndarray:  # type: ignore[type-arg]
        v = self.rng.normal(size=(len(texts), 384)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


async def main(data: Path, seed: int) -> None:
    db = Database(data / "crash.db")
    index = VectorIndex(db, "memories", data / "vectors")
    await asyncio.to_thread(index.open)
    memory = MemoryStore(db, index, _Counts(seed))
    rng = np.random.default_rng(seed)
    written: list[tuple[int, int, str]] = []  # (key, id, user)
    i = 0
    while True:
        i += 1
        user = f"u{rng.integers(0, 4)}"
        key = int(rng.integers(1, 3))
        if rng.random() < 0.2:
            entry = await memory.add(key, "session", f"turn {seed}-{i}", user=user,
                                     session_id="s")
        else:
            entry = await memory.add(key, "user", f"note {seed}-{i}", user=user)
        print(f"add {entry.id}", flush=True)
        written.append((key, entry.id, user))
        if rng.random() < 0.1:
            key, victim, owner = written.pop(int(rng.integers(0, len(written))))
            print(f"deleting {victim}", flush=True)  # from here on it may or may not be
            if await memory.delete(key, victim, owner):
                print(f"del {victim}", flush=True)
        if i % 7 == 0:
            await index.asave()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2])))
