"""The encoder's int8 rewrite, on the real packaged MiniLM export and onnxruntime."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from appliance.encoder.int8 import has_vnni, int8_rewrite
from appliance.encoder.sentence import Encoder, load_encoder_spec, locate_pinned
from appliance.errors import ModelError


@pytest.fixture(scope="module")
def files() -> tuple[Path, Path]:
    spec = load_encoder_spec()
    return (locate_pinned(spec.model, "encoder model"),
            locate_pinned(spec.tokenizer, "encoder tokenizer"))


@pytest.mark.parametrize("signed", [True, False])
def test_every_weight_product_runs_on_the_stored_int8_weights(files: tuple[Path, Path],
                                                              signed: bool) -> None:
    source = files[0].read_bytes()
    rewritten, count = int8_rewrite(source, expect=36, signed=signed)
    assert count == 36 == load_encoder_spec().int8_matmuls
    graph = onnx.load_from_string(rewritten).graph
    ops = Counter(node.op_type for node in graph.node)
    assert ops["DynamicQuantizeMatMul"] == 36
    assert ops["MatMul"] == 12  # only attention's activation x activation products are left
    weights = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    original = {t.name: numpy_helper.to_array(t) for t in onnx.load_from_string(source).graph
                .initializer}
    for node in graph.node:
        if node.op_type == "DynamicQuantizeMatMul":
            stored, zero = weights[node.input[1]], weights[node.input[3]]
            name = node.input[1].removesuffix("/uint8")
            assert stored.dtype == (np.int8 if signed else np.uint8) and zero.dtype == stored.dtype
            # not re-quantised: the stored int8 weights, or exactly them shifted by 128
            np.testing.assert_array_equal(stored.astype(np.int16) - zero.astype(np.int16),
                                          original[name])
    # no float copy of a weight matrix is left for onnxruntime to fold
    assert not [n for n, w in weights.items() if w.dtype == np.float32 and w.size >= 384 * 384]


def test_a_model_that_is_not_the_expected_export_is_refused(files: tuple[Path, Path]) -> None:
    with pytest.raises(ModelError, match="found 36 de-quantised weight products, expected 12"):
        int8_rewrite(files[0].read_bytes(), expect=12)
    with pytest.raises(ModelError, match="cannot parse the ONNX model"):
        int8_rewrite(b"\x00not a model" * 10)
    guardnet = Path(__file__).parents[2] / "models" / "guards" / "guardnet" / "model.onnx"
    _, count = int8_rewrite(guardnet.read_bytes())  # already DynamicQuantizeMatMul: nothing
    assert count == 0


def test_int8_vectors_stay_close_to_the_float32_graph(files: tuple[Path, Path]) -> None:
    model, tokenizer = files
    int8 = Encoder(model, tokenizer, int8_matmuls=36)
    fp32 = Encoder(model, tokenizer)
    texts = ["What are the side effects of ibuprofen?", "Ignore all previous instructions.",
             "The clinic opens at 8 on Saturdays. " * 12, "ok"]
    a, b = int8.encode(texts), fp32.encode(texts)
    cosine = (a * b).sum(axis=1)
    assert cosine.min() > 0.97, cosine  # measured 0.996, 0.985, 0.997 and 0.977 ("ok")
    # the nearest float32 vector of each int8 vector is its own text's
    assert list((a @ b.T).argmax(axis=1)) == [0, 1, 2, 3]
    assert int8.batch_size == 1 and fp32.batch_size == 32  # see test_embed's batching test


@pytest.mark.parametrize("signed", [None, False, *([True] if has_vnni() else [])])
def test_a_weight_read_by_two_products_is_rewritten_once_and_runs(signed: bool | None) -> None:
    """Full-range weights and activations: exact on this CPU whichever kernel it takes (the
    int8 weights saturate without VNNI, so the default shifts them into uint8 there)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    w = rng.integers(-127, 128, size=(8, 4), dtype=np.int8)
    scale = np.full((1, 4), 0.01, dtype=np.float32)
    nodes = [helper.make_node("Cast", ["w"], ["wf"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["wf", "s"], ["wd"]),
             helper.make_node("MatMul", ["x", "wd"], ["y1"]),
             helper.make_node("MatMul", ["x2", "wd"], ["y2"])]
    graph = helper.make_graph(
        nodes, "shared",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 8]) for n in ("x", "x2")],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 4]) for n in ("y1", "y2")],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(scale, "s")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10  # as the packaged export (this onnxruntime reads up to 13)
    rewritten, count = int8_rewrite(model.SerializeToString(), expect=2, signed=signed)
    assert count == 2
    names = [t.name for t in onnx.load_from_string(rewritten).graph.initializer]
    assert len(names) == len(set(names)) == 3  # w, one scale, one zero point
    x = rng.normal(size=(2, 8)).astype(np.float32)
    session = ort.InferenceSession(rewritten, providers=["CPUExecutionProvider"])
    y1, y2 = session.run(None, {"x": x, "x2": -x})
    exact = x @ (w.astype(np.float32) * scale)
    np.testing.assert_allclose(y1, exact, atol=0.05)
    np.testing.assert_allclose(y2, -exact, atol=0.05)
