"""Read a GGUF file's metadata (key/value header) without llama.cpp and without the weights.

Used to size things before a model is loaded (``appliance doctor``: the KV cache).
Format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md (little-endian).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from appliance.errors import ModelError

_MAGIC = b"GGUF"
# type id -> struct format of a scalar
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
            10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
Scalar = int | float | bool | str


def _read(fh: BinaryIO, fmt: str) -> tuple[object, ...]:
    size = struct.calcsize(fmt)
    data = fh.read(size)
    if len(data) != size:
        raise ModelError("truncated GGUF header")
    return struct.unpack(fmt, data)


def _string(fh: BinaryIO) -> str:
    (length,) = _read(fh, "<Q")
    assert isinstance(length, int)
    return fh.read(length).decode("utf-8", "replace")


def _value(fh: BinaryIO, kind: int) -> Scalar | None:
    """A scalar, or None for an array (skipped: tokenizer tables are large and not needed)."""
    if kind == _STRING:
        return _string(fh)
    if kind == _ARRAY:
        (inner, count) = _read(fh, "<IQ")
        assert isinstance(inner, int) and isinstance(count, int)
        if inner in _SCALARS:
            fh.seek(struct.calcsize(_SCALARS[inner]) * count, 1)
        else:
            for _ in range(count):
                _value(fh, inner)
        return None
    if kind not in _SCALARS:
        raise ModelError(f"unknown GGUF value type {kind}")
    (value,) = _read(fh, _SCALARS[kind])
    assert isinstance(value, int | float | bool)
    return value


def read_metadata(path: Path) -> dict[str, Scalar]:
    """The scalar metadata of a GGUF file (arrays are left out)."""
    try:
        with path.open("rb") as fh:
            if fh.read(4) != _MAGIC:
                raise ModelError(f"{path} is not a GGUF file")
            (version, _tensors, count) = _read(fh, "<IQQ")
            if version not in (2, 3):
                raise ModelError(f"{path}: GGUF version {version} is not supported")
            assert isinstance(count, int)
            out: dict[str, Scalar] = {}
            for _ in range(count):
                key = _string(fh)
                (kind,) = _read(fh, "<I")
                assert isinstance(kind, int)
                value = _value(fh, kind)
                if value is not None:
                    out[key] = value
            return out
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc}") from exc


@dataclass(frozen=True)
class ModelShape:
    """What sizes a model's KV cache."""

    n_layer: int
    n_embd_k: int  # per token and layer: head_count_kv x key_length
    n_embd_v: int

    def kv_bytes(self, cells: int, bytes_per: int = 2) -> int:
        """K and V (f16 by default) for ``cells`` tokens."""
        return self.n_layer * (self.n_embd_k + self.n_embd_v) * cells * bytes_per


def model_shape(path: Path) -> ModelShape:
    meta = read_metadata(path)
    arch = str(meta.get("general.architecture", ""))

    def num(key: str, default: int | None = None) -> int:
        value = meta.get(f"{arch}.{key}", default)
        if value is None:
            raise ModelError(f"{path}: GGUF metadata lacks {arch}.{key}")
        return int(value)

    n_embd = num("embedding_length")
    n_head = max(num("attention.head_count"), 1)
    n_head_kv = num("attention.head_count_kv", n_head)
    key_length = num("attention.key_length", n_embd // n_head)
    value_length = num("attention.value_length", n_embd // n_head)
    return ModelShape(n_layer=num("block_count"), n_embd_k=n_head_kv * key_length,
                      n_embd_v=n_head_kv * value_length)
