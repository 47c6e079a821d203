"""Collect the licences of everything the offline bundle ships into DEST (LICENSES/):

- every Python distribution inside the executable: the runtime requirement closure of
  ``appliance`` (no extras), hnswlib when installed, PyInstaller (its bootloader), CPython;
- every model: the packages named by models/manifest.toml and the encoder pins of
  models/guards/manifest.toml, plus the manifest's own licence fields; the guard heads.

Licence texts come from the installed distributions (their dist-info licence files, or
LICENSE/NOTICE files inside the package); DEST/INDEX.md lists each item with its licence.

    python packaging/collect_licences.py DEST [BUILD_WORK_DIR]

With BUILD_WORK_DIR (PyInstaller's work directory of the build, holding its PYZ-00.toc,
PKG-00.toc and, one-folder, COLLECT-00.toc) only the distributions whose modules really are in the executable are listed.
"""

from __future__ import annotations

import ast
import re
import shutil
import sys
import sysconfig
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parent.parent
_LICENCE_FILE = re.compile(r"(?i)(licen[cs]e|copying|notice|thirdpartynotices)[^/]*$")


def _closure(roots: list[str]) -> list[metadata.Distribution]:
    seen: dict[str, metadata.Distribution] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen[key] = dist
        for raw in dist.requires or []:
            req = Requirement(raw)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return sorted(seen.values(), key=lambda d: d.metadata["Name"].lower())


def bundled_modules(work: Path) -> set[str]:
    """Top-level module names (and shared-library directories) inside the executable."""
    names: set[str] = set()
    for toc in ("PYZ-00.toc", "PKG-00.toc", "COLLECT-00.toc"):  # COLLECT: one-folder
        if not (work / toc).is_file():
            continue
        lists = [x for x in ast.literal_eval((work / toc).read_text()) if isinstance(x, list)]
        for entry in lists[0]:  # (name, source path, type code)
            names.add(re.split(r"[./]", entry[0])[0])
    return names


def _in_bundle(dist: metadata.Distribution, bundled: set[str] | None,
               tops: dict[str, list[str]]) -> bool:
    if bundled is None:
        return True
    mine = [top for top, dists in tops.items() if dist.metadata["Name"] in dists]
    return any(top in bundled for top in mine)


def _licence_of(dist: metadata.Distribution) -> str:
    meta = dist.metadata
    expr = meta.get("License-Expression") or ""
    if not expr and meta.get("License") and len(meta["License"]) < 80:
        expr = meta["License"]
    classifiers = [c.split("::")[-1].strip() for c in meta.get_all("Classifier") or []
                   if c.startswith("License ::")]
    return expr or ", ".join(classifiers) or "see the files"


def _copy_files(dist: metadata.Distribution, dest: Path) -> int:
    copied = 0
    for f in dist.files or []:
        if _LICENCE_FILE.search(f.name) and f.suffix not in {".py", ".pyc", ".so"}:
            src = Path(str(dist.locate_file(f)))
            if src.is_file():
                target = dest / str(f).replace("/", "__")
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, target)
                copied += 1
    return copied


def collect(dest: Path, bundled: set[str] | None = None) -> list[str]:
    rows = ["| item | version | licence | texts |", "|---|---|---|---|"]
    dest.mkdir(parents=True, exist_ok=True)

    def add_dist(dist: metadata.Distribution, role: str) -> None:
        name, version = dist.metadata["Name"], dist.version
        sub = dest / f"{name}-{version}"
        n = _copy_files(dist, sub)
        if n == 0:  # no licence text shipped: keep the metadata that states the licence
            sub.mkdir(parents=True, exist_ok=True)
            (sub / "METADATA-licence.txt").write_text(
                f"{name} {version}: no licence file is shipped in the distribution.\n"
                f"Licence stated in its metadata: {_licence_of(dist)}\n")
        rows.append(f"| {role} {name} | {version} | {_licence_of(dist)} | "
                    f"`{sub.name}/` ({n or 'metadata only'}) |")

    tops = metadata.packages_distributions()
    for dist in _closure(["appliance", "hnswlib"]):
        if dist.metadata["Name"] != "appliance" and _in_bundle(dist, bundled, tops):
            add_dist(dist, "library")
    add_dist(metadata.distribution("pyinstaller"), "bootloader")  # runs the executable
    python_licence = Path(sysconfig.get_paths()["stdlib"]) / "LICENSE.txt"
    if python_licence.is_file():
        shutil.copyfile(python_licence, dest / "CPython-LICENSE.txt")
    rows.append(f"| runtime CPython | {sys.version.split()[0]} | PSF-2.0 | "
                "`CPython-LICENSE.txt` |")
    project = REPO / "LICENSE"
    if project.is_file():
        shutil.copyfile(project, dest / "appliance-LICENSE.txt")
    rows.append("| the appliance (code, guard heads, policies) | 0.1.0 | Apache-2.0 | "
                "(pyproject.toml) |")

    models = tomllib.loads((REPO / "models" / "manifest.toml").read_text())["model"]
    guards = tomllib.loads((REPO / "models" / "guards" / "manifest.toml").read_text())
    packages: dict[str, str] = {}
    for m in models:
        packages[m["package"].split("==")[0]] = f"model {m['id']}: {m['licence']}"
    encoder = guards["encoder"]
    for key in ("model", "tokenizer"):
        packages[encoder[key]["package"].split("==")[0]] = \
            f"encoder {key} ({encoder['id']}): {encoder['licence']}"
    for package, what in packages.items():
        try:
            dist = metadata.distribution(package)
        except metadata.PackageNotFoundError:
            rows.append(f"| {what} | - | see the manifest | package {package} not installed |")
            continue
        add_dist(dist, what + "; package")
    for c in guards.get("classifier", []):
        rows.append(f"| guard classifier {c['id']} | - | {c['description']} | "
                    "models/guards/manifest.toml |")
    (dest / "INDEX.md").write_text(
        "# Licences of everything in this bundle\n\n"
        "Generated by packaging/collect_licences.py from the installed distributions and "
        "the model manifests.\n\n" + "\n".join(rows) + "\n")
    return rows


def main() -> int:
    if len(sys.argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    bundled = bundled_modules(Path(sys.argv[2])) if len(sys.argv) == 3 else None
    rows = collect(Path(sys.argv[1]), bundled)
    print(f"collect_licences: {len(rows) - 2} items")
    return 0


if __name__ == "__main__":
    sys.exit(main())
