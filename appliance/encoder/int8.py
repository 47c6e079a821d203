"""Run an int8-weight ONNX export's matrix products in int8.

The packaged MiniLM export stores each weight matrix as int8 with one float scale per
output column, and de-quantises it in the graph: ``MatMul(x, Mul(Cast(W_int8), scale))``.
onnxruntime folds that into a float32 constant at load, so every run reads the whole float
matrix and multiplies in float32. :func:`int8_rewrite` rewrites each such product into
onnxruntime's ``com.microsoft.DynamicQuantizeMatMul(x, W_int8, scale, 0)``, which quantises
the activations per run (uint8, per tensor) and multiplies with the integer kernels (VNNI
where the CPU has it): the same stored weights, a quarter of the bytes read, about 2.5-4x
faster on short texts. The outputs move slightly (cosine 0.98-0.997 to the float32 graph,
0.977 for a one-word text), so heads are trained on this graph's vectors.

Integer kernels. With VNNI, onnxruntime multiplies uint8 activations by int8 weights
exactly. Without it (plain AVX2) that kernel adds pairs of products in 16 bits and
saturates (255 * 127 * 2 > 32767): outputs go wrong wherever activations and weights are
both large. There the weights are stored shifted into uint8 (``w + 128``, zero point 128),
which the uint8 x uint8 kernel multiplies exactly: the same numbers, on every CPU.

The rewrite is code, applied in memory to the pinned file's bytes: the file on disk stays
the verified one. It needs the ``onnx`` package (a pinned dependency).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from appliance.errors import ModelError

MS_DOMAIN = "com.microsoft"


@functools.cache
def has_vnni() -> bool:
    """Whether this CPU multiplies uint8 by int8 without saturating (AVX-512 or AVX VNNI)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


def int8_rewrite(model: bytes, *, expect: int | None = None,
                 signed: bool | None = None) -> tuple[bytes, int]:
    """The model with every de-quantised weight product in int8, and how many were rewritten.

    ``expect``: the number of products that must be rewritten (a :class:`ModelError`
    otherwise, so a changed export cannot silently fall back to float32). ``signed``: keep
    the weights int8 (exact with VNNI) or shift them into uint8 (exact everywhere); by
    default whatever is exact and fastest on this CPU."""
    signed = has_vnni() if signed is None else signed
    import onnx
    from onnx import helper

    try:
        proto = onnx.load_from_string(model)
    except Exception as exc:  # onnx raises DecodeError and friends
        raise ModelError(f"cannot parse the ONNX model for the int8 rewrite: {exc}") from exc
    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    nodes: list[Any] = []
    added: dict[str, Any] = {}  # by name: a weight read by two products is added once
    rewritten = 0
    for node in graph.node:
        weights = _dequantised(node, producer, inits)
        product = None if weights is None else _int8_product(node, *weights, inits, signed,
                                                             added)
        if product is None:
            nodes.append(node)
        else:
            nodes.append(product)
            rewritten += 1
    if expect is not None and rewritten != expect:
        raise ModelError(f"the int8 rewrite found {rewritten} de-quantised weight products, "
                         f"expected {expect}: the model is not the export it was written for")
    del graph.node[:]
    graph.node.extend(_live(nodes, [o.name for o in graph.output]))
    graph.initializer.extend(added.values())
    used = {name for node in graph.node for name in node.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    if not any(o.domain == MS_DOMAIN for o in proto.opset_import):
        proto.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return proto.SerializeToString(), rewritten


def _int8_product(node: Any, quantized: str, scale_name: str, inits: dict[str, Any],
                  signed: bool, added: dict[str, Any]) -> Any | None:
    """The ``DynamicQuantizeMatMul`` that replaces ``node`` (its weight ``quantized``, its
    scale ``scale_name``), the initializers it needs put in ``added``; None when the scale is
    neither one per tensor nor one per output column."""
    from onnx import helper, numpy_helper

    scale = numpy_helper.to_array(inits[scale_name]).astype(np.float32).reshape(-1)
    columns = int(inits[quantized].dims[-1])
    if scale.size not in (1, columns):
        return None
    scale_out, zero_out = f"{scale_name}/int8_scale", f"{quantized}/int8_zero"
    weight_out = quantized if signed else f"{quantized}/uint8"
    added.setdefault(scale_out, numpy_helper.from_array(scale, scale_out))
    if signed:
        zero = np.zeros(scale.shape, np.int8)
    else:
        zero = np.full(scale.shape, 128, np.uint8)
        w = numpy_helper.to_array(inits[quantized]).astype(np.int16) + 128
        added.setdefault(weight_out, numpy_helper.from_array(w.astype(np.uint8), weight_out))
    added.setdefault(zero_out, numpy_helper.from_array(zero, zero_out))
    return helper.make_node(
        "DynamicQuantizeMatMul", [node.input[0], weight_out, scale_out, zero_out],
        list(node.output), name=f"{node.name or node.output[0]}/int8", domain=MS_DOMAIN)


def _dequantised(node: Any, producer: dict[str, Any],
                 inits: dict[str, Any]) -> tuple[str, str] | None:
    """``(int8 weight, scale)`` initializer names when ``node`` is
    ``MatMul(x, Mul(Cast(int8 weight), scale))``."""
    if node.op_type != "MatMul":
        return None
    mul = producer.get(node.input[1])
    if mul is None or mul.op_type != "Mul" or mul.input[1] not in inits:
        return None
    cast = producer.get(mul.input[0])
    if cast is None or cast.op_type != "Cast" or cast.input[0] not in inits:
        return None
    weight = inits[cast.input[0]]
    if weight.data_type != 3 or len(weight.dims) != 2:  # 3: INT8
        return None
    return str(weight.name), str(mul.input[1])


def _live(nodes: list[Any], outputs: list[str]) -> list[Any]:
    """``nodes`` without those whose outputs nothing reads any more, in their order."""
    needed = set(outputs)
    keep = []
    for node in reversed(nodes):
        if any(out in needed for out in node.output):
            keep.append(node)
            needed.update(node.input)
    return keep[::-1]
