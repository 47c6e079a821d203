"""The old heads' figures (``old_heads`` in metrics.json): the prompt-injection and
content-safety heads on the shared MiniLM embedding, and the clinic policy's phrase rules, on
the guard network's test split and on both independent sets.

Run once, at commit e17eb0f (the last one whose runtime still loaded the old heads: their
files, ``appliance.guards.embedding_head`` and the loader's embedding-head path), with the
build inputs installed; ``build.py`` carries the result over::

    git checkout e17eb0f && python models/guards/old_figures.py OUT.json

The input rail flags a text when either old head flags it; the old output rail is the clinic
policy's phrase rules.
"""

from __future__ import annotations

import json
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

import data
import numpy as np
from _common import REPO
from evaluate import INDEPENDENT, INDEPENDENT_B, _kind, _known, independent_rows, tally

OLD_EQUIVALENT = {"injection": "prompt-injection", "unsafe": "content-safety",
                  "directive": "clinic output rules"}


def _old_models() -> tuple[Any, Any, Any, list[re.Pattern[str]]]:
    from appliance.encoder.sentence import Encoder
    from appliance.guards.loader import load_guard_classifier

    encoder = Encoder.from_manifest(threads=1)
    inj = load_guard_classifier("prompt-injection", encoder=encoder)  # type: ignore[call-arg]
    safe = load_guard_classifier("content-safety", encoder=encoder)  # type: ignore[call-arg]
    policy = tomllib.loads((REPO / "appliance" / "guards" / "policies" / "clinic.toml")
                           .read_text(encoding="utf-8"))
    rules = [re.compile(r["pattern"], re.I) for r in policy["output"]["rules"]]
    return encoder, inj, safe, rules


def split_figures(rows: list[data.Row]) -> dict[str, Any]:
    encoder, inj, safe, rules = _old_models()
    flags = np.zeros((len(rows), 3), dtype=bool)
    for i, r in enumerate(rows):
        e = encoder.encode_one(r.text)
        flags[i] = (inj.classify(r.text, e).flagged, safe.classify(r.text, e).flagged,
                    any(rule.search(r.text) for rule in rules))
    out: dict[str, Any] = {}
    for j, label in enumerate(("injection", "unsafe", "directive")):
        idx, y = _known(rows, label)
        f = flags[idx, j]
        kinds: dict[str, dict[str, Any]] = {}
        for i, yi, fi in zip(idx, y, f, strict=True):
            d = kinds.setdefault(f"{_kind(rows[i])}/{'positive' if yi else 'negative'}",
                                 {"n": 0, "flagged": 0})
            d["n"] += 1
            d["flagged"] += int(fi)
        for d in kinds.values():
            d["rate"] = round(d["flagged"] / d["n"], 4)
        out[label] = {"old_model": OLD_EQUIVALENT[label],
                      "caught": round(float(np.mean(f[y == 1])), 4) if y.any() else None,
                      "false_blocked": round(float(np.mean(f[y == 0])), 4)
                      if (y == 0).any() else None, "by_kind": dict(sorted(kinds.items()))}
    return out


def decisions(rows: list[dict[str, Any]]) -> list[bool]:
    encoder, inj, safe, rules = _old_models()
    out = []
    for r in rows:
        if r["role"] == "assistant":
            out.append(any(rule.search(r["text"]) for rule in rules))
        else:
            e = encoder.encode_one(r["text"])
            out.append(inj.classify(r["text"], e).flagged or safe.classify(r["text"], e).flagged)
    return out


def main(out: Path) -> None:
    test = [r for r in data.build() if r.split == "test"]
    result: dict[str, Any] = {"commit": "e17eb0f", "test_split": split_figures(test)}
    for key, folder in (("independent", INDEPENDENT), ("independent_b", INDEPENDENT_B)):
        rows = independent_rows(folder)
        result[key] = tally(rows, decisions(rows))
    out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
