"""Loading guard models: the guard network by id from the guard manifest, and any
classifier from a directory by the type its ``labels.json`` names (the generic runner for a
user-placed model); a manifest entry's files are checked against their sha256 pins first."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from appliance.encoder.sentence import SideWork
from appliance.errors import ModelError
from appliance.guards.classifier import Cascade, Classifier, read_json
from appliance.guards.guardnet import GuardNetwork
from appliance.guards.sequence_classifier import SequenceClassifier
from appliance.resources import GUARDS_MANIFEST, verify_pinned

NETWORK_ID = "guardnet"


def load_classifier(directory: Path, *, threads: int = 1, id: str | None = None) -> Classifier:
    """A classifier from its directory; the type is ``labels.json``'s ``type``."""
    if not directory.is_dir():
        raise ModelError(f"classifier directory not found: {directory}")
    kind = "sequence-classification"
    if (directory / "labels.json").is_file():
        kind = str(read_json(directory / "labels.json").get("type", kind))
    if kind == "sequence-classification":
        return SequenceClassifier(directory, id=id, threads=threads)
    if kind == "cascade":
        raw = read_json(directory / "labels.json")
        first = load_classifier((directory / raw["first"]).resolve(), threads=threads)
        second = load_classifier((directory / raw["second"]).resolve(), threads=threads)
        return Cascade(first, second, low=float(raw["low"]), high=float(raw["high"]),
                       id=id or directory.name)
    raise ModelError(f"{directory}: unknown classifier type {kind!r}")


@dataclass(frozen=True)
class GuardModel:
    """One ``[[classifier]]`` entry of the guard manifest."""

    id: str
    directory: Path
    files: tuple[tuple[str, str], ...]  # (file name, sha256)


def read_guard_manifest(manifest: Path = GUARDS_MANIFEST) -> tuple[GuardModel, ...]:
    try:
        raw = tomllib.loads(manifest.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelError(f"guard model manifest not found: {manifest}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ModelError(f"{manifest} is not valid TOML: {exc}") from exc
    try:
        return tuple(GuardModel(
            id=row["id"], directory=(manifest.parent / row["dir"]).resolve(),
            files=tuple(sorted(row["files"].items())))
            for row in raw.get("classifier", []))
    except (KeyError, AttributeError) as exc:
        raise ModelError(f"{manifest}: a [[classifier]] entry lacks {exc}") from exc


def verified_entry(model_id: str, manifest: Path = GUARDS_MANIFEST) -> GuardModel:
    """A ``[[classifier]]`` entry of the guard manifest whose files all match their pins."""
    entries = {m.id: m for m in read_guard_manifest(manifest)}
    if model_id not in entries:
        raise ModelError(f"{manifest}: no classifier {model_id!r} (have {sorted(entries)})")
    entry = entries[model_id]
    fix = "restore it from git (`git checkout -- models/guards`) or rebuild it with " \
          "`python models/guards/build.py`"
    for name, sha256 in entry.files:
        verify_pinned(entry.directory / name, sha256, f"guard classifier {model_id!r}", fix)
    return entry


def load_guard_classifier(model_id: str, *, manifest: Path = GUARDS_MANIFEST,
                          threads: int = 1) -> Classifier:
    """A classifier of the guard manifest run by the generic runner, its files verified."""
    entry = verified_entry(model_id, manifest)
    return load_classifier(entry.directory, threads=threads, id=model_id)


def load_guard_network(model_id: str = NETWORK_ID, *, manifest: Path = GUARDS_MANIFEST,
                       threads: int = 1, turns: SideWork | None = None) -> GuardNetwork:
    """The guard network of the guard manifest, every file checked against its pin."""
    entry = verified_entry(model_id, manifest)
    return GuardNetwork(entry.directory, threads=threads, id=model_id, turns=turns)
