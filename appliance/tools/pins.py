"""Every file the appliance loads that is pinned by sha256: the chat models of the model
manifest, the shared encoder and the guard classifiers of the guard manifest. One list, used
by `appliance models verify` and `appliance doctor`."""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from appliance.engine.models import ModelStore
from appliance.errors import ModelError
from appliance.guards.loader import read_guard_manifest
from appliance.resources import GUARDS_MANIFEST, locate_part, sha256_file


@dataclass(frozen=True)
class PinnedPath:
    label: str  # "model smollm2-135m-instruct", "encoder model", "guard guardnet/model.onnx"
    path: Path | None  # None when it cannot even be located (package missing)
    sha256: str
    problem: str = ""  # why it could not be located

    @property
    def size(self) -> int:
        return self.path.stat().st_size if self.path is not None and self.path.is_file() else 0


@dataclass(frozen=True)
class PinCheck:
    pin: PinnedPath
    ok: bool
    message: str


def all_pins(store: ModelStore, ids: Sequence[str] = (),
             guards_manifest: Path = GUARDS_MANIFEST) -> tuple[PinnedPath, ...]:
    """The chat models (only ``ids`` if given), then, when no ids are given, the encoder and
    the guard classifiers."""
    pins: list[PinnedPath] = []
    for spec in store.specs:
        if ids and spec.id not in ids:
            continue
        assert spec.sha256 is not None  # manifest entries always have a pin
        try:
            pins.append(PinnedPath(f"model {spec.id}", store.location(spec), spec.sha256))
        except ModelError as exc:
            pins.append(PinnedPath(f"model {spec.id}", None, spec.sha256, str(exc)))
    if ids:
        return tuple(pins)
    try:
        encoder = tomllib.loads(guards_manifest.read_text(encoding="utf-8")).get("encoder", {})
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ModelError(f"cannot read the guard manifest {guards_manifest}: {exc}") from exc
    for key in ("model", "tokenizer"):
        row = encoder.get(key, {})
        try:
            pins.append(PinnedPath(f"encoder {key}", locate_part(row["part"]), row["sha256"]))
        except ModelError as exc:
            pins.append(PinnedPath(f"encoder {key}", None, row["sha256"], str(exc)))
    for guard in read_guard_manifest(guards_manifest):
        for name, sha256 in guard.files:
            pins.append(PinnedPath(f"guard {guard.id}/{name}", guard.directory / name, sha256))
    return tuple(pins)


def check_pin(pin: PinnedPath, progress: Callable[[int], None] | None = None) -> PinCheck:
    if pin.path is None:
        return PinCheck(pin, False, pin.problem)
    if not pin.path.is_file():
        return PinCheck(pin, False, f"file {pin.path} is missing")
    actual = sha256_file(pin.path, progress)
    if actual != pin.sha256.lower():
        return PinCheck(pin, False, f"{pin.path} fails its sha256 pin (expected {pin.sha256}, "
                                    f"got {actual}): corrupt or not the pinned release")
    return PinCheck(pin, True, f"sha256 {actual}  {pin.path}")
