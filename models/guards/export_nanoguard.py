"""Export metatronnanoguard 0.1.0 (MIT) to an int8 ONNX model directory for the generic runner.

Writes ``models/guards/nanoguard/``: ``model.onnx`` (int8 dynamic quantization),
``tokenizer.json`` (Hugging Face ``tokenizers`` format) and ``labels.json``.

* The tokenizer ships as a pickled ``tiktoken.Encoding``. It is never unpickled as such: a
  restricted unpickler accepts only that one class and keeps its state (regex pattern,
  byte-level merge ranks, special tokens), from which an equivalent byte-level BPE
  ``tokenizer.json`` is rebuilt. When ``tiktoken`` is installed the rebuilt tokenizer is
  checked token for token against it.
* The model is re-declared here with ONNX-friendly operations (explicit RMSNorm, float32
  rotary tables rounded as the original's bfloat16 ones, the bfloat16 embedding widened to
  float32) and loaded from the package's ``model.pt`` with ``strict=True``. Its outputs are
  compared with the package's own ``nanoguard.model.Classifier``.
* The model attends to padding (its attention has no mask), so inputs are always padded to
  512 tokens, as in training; ``labels.json`` says so (``pad_to_max_length``).

Build-time requirements: torch==2.13.0, onnx, onnxruntime (and tiktoken for the check).
"""

from __future__ import annotations

import importlib.util
import io
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from _common import Example, bastion, medical, package_dir, refusal, write_json
from torch import nn

BOS, PAD = "<|reserved_0|>", "<|reserved_1|>"
SEQ = 512


# --- tokenizer -------------------------------------------------------------------------------

class _EncodingState:
    """Stands in for tiktoken.core.Encoding while reading the pickle: keeps its state only."""

    state: dict[str, Any]

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.state = state


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("tiktoken.core", "Encoding"):
            return _EncodingState
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from tokenizer.pkl")


def read_tiktoken_state(path: Path) -> dict[str, Any]:
    obj = _RestrictedUnpickler(io.BytesIO(path.read_bytes())).load()
    if not isinstance(obj, _EncodingState):
        raise SystemExit(f"{path}: not a pickled tiktoken Encoding")
    return obj.state


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (as tokenizers' ByteLevel uses)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def build_tokenizer_json(state: dict[str, Any]) -> dict[str, Any]:
    ranks: dict[bytes, int] = state["mergeable_ranks"]
    specials: dict[str, int] = state["special_tokens"]
    b2u = _bytes_to_unicode()

    def u(token: bytes) -> str:
        return "".join(b2u[b] for b in token)

    vocab = {u(tok): rank for tok, rank in ranks.items()}
    merges: list[tuple[bytes, bytes, int]] = []
    for tok, rank in ranks.items():
        if len(tok) < 2:
            continue
        local = [(tok[:i], tok[i:], rank) for i in range(1, len(tok))
                 if tok[:i] in ranks and tok[i:] in ranks]
        local.sort(key=lambda m: (ranks[m[0]], ranks[m[1]]))
        merges.extend(local)
    merges.sort(key=lambda m: m[2])
    added = [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True}
             for s, i in sorted(specials.items(), key=lambda kv: kv[1])]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": state["pat_str"]}, "behavior": "Isolated",
             "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
             "use_regex": False},
        ]},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": BOS, "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": BOS, "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {BOS: {"id": BOS, "ids": [specials[BOS]], "tokens": [BOS]}},
        },
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                    "use_regex": False},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
                  "vocab": vocab, "merges": [[u(a), u(b)] for a, b, _ in merges]},
    }


def check_tokenizer(state: dict[str, Any], tokenizer_path: Path, texts: list[str]) -> str:
    """Compare with tiktoken itself, when it is installed; returns a one-line verdict."""
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(tokenizer_path))
    if importlib.util.find_spec("tiktoken") is None:
        return "not checked against tiktoken (pip install tiktoken to check)"
    import tiktoken
    enc = tiktoken.Encoding(name=state["name"], pat_str=state["pat_str"],
                            mergeable_ranks=state["mergeable_ranks"],
                            special_tokens=state["special_tokens"])
    bos = state["special_tokens"][BOS]
    bad = [t for t in texts if tok.encode(t).ids != [bos, *enc.encode_ordinary(t)]]
    if bad:
        raise SystemExit(f"rebuilt tokenizer differs from tiktoken on {len(bad)} of "
                         f"{len(texts)} texts, e.g. {bad[0]!r}")
    return f"identical to tiktoken on {len(texts)} texts"


# --- model -----------------------------------------------------------------------------------

def _rms(x: torch.Tensor) -> torch.Tensor:
    eps = torch.finfo(torch.float32).eps  # what F.rms_norm uses when eps is None
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.c_q = nn.Linear(dim, dim, bias=False)
        self.c_k = nn.Linear(dim, dim, bias=False)
        self.c_v = nn.Linear(dim, dim, bias=False)
        self.c_proj = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q = self.c_q(x).view(b, t, self.heads, self.head_dim)
        k = self.c_k(x).view(b, t, self.heads, self.head_dim)
        v = self.c_v(x).view(b, t, self.heads, self.head_dim)
        q, k = _rms(_rotary(q, cos, sin)), _rms(_rotary(k, cos, sin))
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        att = torch.softmax((q @ k.transpose(-1, -2)) * self.head_dim ** -0.5, dim=-1)
        return self.c_proj((att @ v).transpose(1, 2).reshape(b, t, c))


def _rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    d = x.shape[3] // 2
    x1, x2 = x[..., :d], x[..., d:]
    return torch.cat([x1 * cos + x2 * sin, x1 * (-sin) + x2 * cos], 3)


class _MLP(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.c_fc = nn.Linear(dim, 4 * dim, bias=False)
        self.c_proj = nn.Linear(4 * dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.relu(self.c_fc(x)).square())


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.attn = _Attention(dim, heads)
        self.mlp = _MLP(dim)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(_rms(x), cos, sin)
        return x + self.mlp(_rms(x))


class ExportClassifier(nn.Module):
    """nanoguard.model.Classifier, re-declared with operations that export to ONNX."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        dim, heads, layers = cfg["n_embd"], cfg["n_head"], cfg["n_layer"]
        self.transformer = nn.ModuleDict({
            "wte": nn.Embedding(cfg["vocab_size"], dim),
            "h": nn.ModuleList([_Block(dim, heads) for _ in range(layers)]),
        })
        self.cls_norm = nn.LayerNorm(dim)
        self.cls_head = nn.Linear(dim, cfg["num_classes"])
        self.resid_lambdas = nn.Parameter(torch.ones(layers))
        self.x0_lambdas = nn.Parameter(torch.zeros(layers))
        half = dim // heads
        inv_freq = 1.0 / (10000 ** (torch.arange(0, half, 2, dtype=torch.float32) / half))
        freqs = torch.outer(torch.arange(cfg["sequence_len"] * 2, dtype=torch.float32), inv_freq)
        # the original keeps these tables in bfloat16: round them the same way
        self.register_buffer("cos", freqs.cos().bfloat16().float()[None, :, None, :],
                             persistent=False)
        self.register_buffer("sin", freqs.sin().bfloat16().float()[None, :, None, :],
                             persistent=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        t = input_ids.shape[1]
        cos, sin = self.cos[:, :t], self.sin[:, :t]
        x = _rms(self.transformer.wte(input_ids))
        x0 = x
        for i, block in enumerate(self.transformer.h):
            x = block(self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0, cos, sin)
        x = _rms(x)
        mask = attention_mask.unsqueeze(-1).to(x.dtype)
        pooled = (x * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        return self.cls_head(self.cls_norm(pooled))


def load_checkpoint() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    ckpt = torch.load(package_dir("nanoguard") / "assets" / "model.pt", map_location="cpu",
                      weights_only=True)
    return ckpt["model_state_dict"], ckpt["config"]


def _original_model(sd: dict[str, torch.Tensor], cfg: dict[str, Any]) -> nn.Module:
    """The package's own architecture, loaded from its file (for the equivalence check)."""
    spec = importlib.util.spec_from_file_location(
        "_nanoguard_model", package_dir("nanoguard") / "model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.Classifier(module.ModelConfig(**{**cfg, "dropout": 0.0}))
    model.load_state_dict(sd)
    return model.eval()


def _batch(tok: Any, texts: list[str], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.full((len(texts), SEQ), pad_id, dtype=np.int64)
    mask = np.zeros((len(texts), SEQ), dtype=np.int64)
    for i, t in enumerate(texts):
        row = tok.encode(t).ids[:SEQ]
        ids[i, :len(row)] = row
        mask[i, :len(row)] = 1
    return ids, mask


def _softmax1(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True))[:, 1]


def export(out: Path, log: list[str]) -> None:
    """Write the model directory ``out`` (model.onnx, tokenizer.json, labels.json)."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from tokenizers import Tokenizer

    torch.manual_seed(0)
    out.mkdir(parents=True, exist_ok=True)
    state = read_tiktoken_state(package_dir("nanoguard") / "assets" / "tokenizer.pkl")
    tok_path = out / "tokenizer.json"
    tok_path.write_text(json.dumps(build_tokenizer_json(state), ensure_ascii=False),
                        encoding="utf-8")
    examples: list[Example] = bastion() + refusal() + medical()
    texts = [e.text for e in examples]
    probes = ["", " ", "  leading spaces", "trailing\n\n", "I'm   here\r\nok", "naïve café 😀",
              "ÄÖÜ straße", "1234567 8,9", "don't WON'T they'll", "\t\ttabs", "中文 日本語"]
    log.append("nanoguard tokenizer: " + check_tokenizer(state, tok_path, texts + probes))

    sd, cfg = load_checkpoint()
    model = ExportClassifier(cfg)
    model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    model.eval()
    tok = Tokenizer.from_file(str(tok_path))
    pad_id = state["special_tokens"][PAD]

    fp32 = out / "model.fp32.onnx"
    ids, mask = _batch(tok, texts[:2], pad_id)
    with torch.no_grad():
        torch.onnx.export(
            model, (torch.from_numpy(ids), torch.from_numpy(mask)), str(fp32),
            input_names=["input_ids", "attention_mask"], output_names=["logits"],
            dynamic_axes={"input_ids": {0: "batch", 1: "sequence"},
                          "attention_mask": {0: "batch", 1: "sequence"},
                          "logits": {0: "batch"}},
            opset_version=17, dynamo=False)
    target = out / "model.onnx"
    quantize_dynamic(str(fp32), str(target), weight_type=QuantType.QInt8,
                     op_types_to_quantize=["MatMul", "Gather"])
    onnx.checker.check_model(str(target))

    # equivalence: original PyTorch model vs exported fp32 vs shipped int8
    original = _original_model(sd, cfg)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    s32 = ort.InferenceSession(str(fp32), so, providers=["CPUExecutionProvider"])
    s8 = ort.InferenceSession(str(target), so, providers=["CPUExecutionProvider"])
    p_ref, p32, p8 = [], [], []
    sample = texts[::4]  # every 4th text: enough to compare, a minute not five
    for start in range(0, len(sample), 16):
        ids, mask = _batch(tok, sample[start:start + 16], pad_id)
        with torch.no_grad():
            p_ref.append(_softmax1(original(torch.from_numpy(ids),
                                            torch.from_numpy(mask).bool()).float().numpy()))
        p32.append(_softmax1(s32.run(None, {"input_ids": ids, "attention_mask": mask})[0]))
        p8.append(_softmax1(s8.run(None, {"input_ids": ids, "attention_mask": mask})[0]))
    ref, a, b = np.concatenate(p_ref), np.concatenate(p32), np.concatenate(p8)
    log.append(f"nanoguard export: max |p_onnx_fp32 - p_torch| = {np.abs(a - ref).max():.4f}, "
               f"max |p_int8 - p_torch| = {np.abs(b - ref).max():.4f}, "
               f"mean = {np.abs(b - ref).mean():.4f} over {len(sample)} texts")
    fp32.unlink()
    write_json(out / "labels.json", {
        "type": "sequence-classification",
        "description": "metatronnanoguard 0.1.0 (MIT), int8 ONNX export; prompt injection.",
        "labels": ["BENIGN", "MALICIOUS"],
        "positive_labels": ["MALICIOUS"],
        "output": "logits",
        "max_length": SEQ,
        "pad_to_max_length": True,
        "window_length": 128,
        "window_stride": 32,
        "threshold": 0.5,
    })
