"""``--prepare DIR``: everything the offline run needs, gathered here where the package
registries answer, pinned and cut into the parts of the device calls (``DIR/carry/call-N``).

Run it with the project's venv (the model files are located as the appliance locates them:
inside the installed model packages).
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

from gpu_check import image, plan
from gpu_check.manifest import CheckError, Manifest, sha256_file, write_parts

MIB = 2**20
# Left out of the llama-cpp-python sdist: what neither build reads (each build runs from
# the trimmed copy in the dry run, which proves it). Paths below the sdist's top folder.
_TRIM_TOP = (".git", ".github", "docker", "docs", "examples", "tests", "mkdocs.yml")
_TRIM_VENDOR = (
    ".github", "docs", "models", "tests", "examples", "pocs", "media", "gguf-py", "benches",
    "ci", "requirements", "skills", "tools/server/tests", "tools/server/bench",
    "tools/mtmd/tests", "tools/mtmd/test-1.jpeg", "tools/mtmd/test-2.mp3",
    "tools/mtmd/test-3.mp4",
    # ggml backends neither build enables (only ggml-cpu and ggml-cuda are compiled)
    *(f"ggml/src/ggml-{b}" for b in ("vulkan", "sycl", "metal", "cann", "opencl", "webgpu",
                                      "hexagon", "openvino", "et", "virtgpu", "zdnn",
                                      "zendnn", "musa", "hip", "rpc")),
)
# The server's web UI: only the templates the build embeds from (no assets offline).
_UI_KEEP = ("CMakeLists.txt", "ui.cpp.in", "ui.h.in", "sources.cmake")


def keep_in_sdist(name: str) -> bool:
    """Whether a member of the sdist (``llama_cpp_python-X/...``) is carried."""
    rel = name.split("/", 1)[1] if "/" in name else ""
    if not rel:
        return True
    if any(rel == t or rel.startswith(t + "/") for t in _TRIM_TOP):
        return False
    if not rel.startswith("vendor/llama.cpp/"):
        return True
    sub = rel[len("vendor/llama.cpp/"):]
    if any(sub == t or sub.startswith(t + "/") for t in _TRIM_VENDOR):
        return False
    if sub.startswith("tools/ui/"):
        return sub[len("tools/ui/"):] in _UI_KEEP
    return not re.match(r"convert_.*\.py$", sub)


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True)


def trimmed_sdist(version: str, downloads: Path, out: Path) -> Path:
    """The llama-cpp-python sdist without what the builds do not read, as a valid sdist."""
    name = f"llama_cpp_python-{version}.tar.gz"
    original = downloads / name
    if not original.is_file():
        _pip("download", "-q", "--no-deps", "--no-binary", "llama-cpp-python", "-d",
             str(downloads), f"llama-cpp-python=={version}")
    target = out / name
    target.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(original) as src, open(target, "wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as dst:
        for member in src.getmembers():
            if keep_in_sdist(member.name):
                dst.addfile(member, src.extractfile(member) if member.isfile() else None)
    return target


def sdist_of(requirement: str, downloads: Path, out: Path) -> Path:
    before = set(downloads.glob("*.tar.gz"))
    # The sdist of this project only: pip prepares its metadata, and with ":all:" its build
    # requirements (numpy for hnswlib) would have to build from source too.
    project = re.split(r"[=<>!~ \[;]", requirement, maxsplit=1)[0]
    _pip("download", "-q", "--no-deps", "--no-binary", project, "-d", str(downloads),
         requirement)
    wanted = image.name_of(requirement)
    found = [p for p in set(downloads.glob("*.tar.gz")) | before
             if image.name_of(p.name.rsplit("-", 1)[0]) == wanted]
    if len(found) != 1:
        raise CheckError(f"expected one sdist of {requirement} in {downloads}, found {found}")
    out.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy2(found[0], out / found[0].name))


def wheels(requirements: list[str], downloads: Path, out: Path) -> dict[str, list[str]]:
    """Python 3.12 manylinux wheels of ``requirements`` and their needs, less the image's;
    returns the closure (carried files, image names it relies on)."""
    platforms = [a for p in image.PLATFORMS for a in ("--platform", p)]
    if downloads.exists():
        shutil.rmtree(downloads)
    _pip("download", "-q", "--only-binary=:all:", "--python-version", image.PYTHON,
         "--implementation", "cp", *platforms, "-d", str(downloads), *requirements)
    out.mkdir(parents=True, exist_ok=True)
    carried, relied = [], []
    for wheel in sorted(downloads.glob("*.whl")):
        name = image.wheel_name(wheel.name)
        if name in image.IMAGE:
            relied.append(name)
            continue
        if any(image.wheel_name(c) == name for c in carried):
            raise CheckError(f"two versions of {name} among the wheels: {wheel.name}")
        shutil.copy2(wheel, out / wheel.name)
        carried.append(wheel.name)
    return {"carried": carried, "image": relied}


def model_files(repo: Path) -> list[tuple[str, Path, str]]:
    """(destination, local file, sha256 pin) of the default model and the encoder files,
    located as the appliance locates them."""
    sys.path.insert(0, str(repo))
    from appliance import config
    from appliance.engine.models import ModelStore
    from appliance.resources import GUARDS_MANIFEST, locate_part

    settings = config.load(env={})
    store = ModelStore(settings.manifest, settings.models_dir)
    spec = store.resolve(settings.model)
    if spec.sha256 is None:
        raise CheckError(f"the default model {spec.id} has no sha256 pin")
    dest = f"models/{spec.file}" if spec.assembled else f"site/{spec.parts[0]}"
    out = [(dest, store.location(spec), spec.sha256)]
    encoder = tomllib.loads(GUARDS_MANIFEST.read_text())["encoder"]
    for key in ("model", "tokenizer"):
        part = encoder[key]["part"]
        out.append((f"site/{part}", locate_part(part), encoder[key]["sha256"]))
    for _, path, pin in out:
        if not path.is_file() or sha256_file(path) != pin:
            raise CheckError(f"{path} is missing or fails its pin; run `make install` first")
    return out


def tree_bytes(repo: Path) -> int:
    """What every device call carries besides the parts: the tracked and untracked, not
    ignored files of the checkout (and its shared/ folder)."""
    listed = subprocess.run(["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], check=True, capture_output=True).stdout
    paths = {repo / p for p in listed.decode().split("\0") if p}
    shared = repo / "shared"
    if shared.is_dir():
        paths |= {p for p in shared.rglob("*") if p.is_file()}
    return sum(p.stat().st_size for p in paths if p.is_file() and not p.is_symlink())


def build_version(repo: Path) -> str:
    found = re.search(r'^version="([^"]+)"', (repo / "native" / "build.sh").read_text(), re.M)
    if found is None:
        raise CheckError("cannot read llama-cpp-python's version from native/build.sh")
    return found.group(1)


def _check_place(out: Path, repo: Path) -> None:
    """The call folders travel as carried paths: inside the repository, ignored by git."""
    if not out.is_relative_to(repo):
        raise CheckError(f"{out} is outside the repository {repo}: a device call carries "
                         f"only paths inside it")
    out.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["git", "-C", str(repo), "check-ignore", "-q", str(out)]).returncode:
        raise CheckError(f"{out} is not ignored by git: it would travel with the working "
                         f"tree in every call (add it to .gitignore)")


def prepare(out: Path, repo: Path, limit_mib: float, margin_mib: float) -> Manifest:
    _check_place(out, repo)
    created = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    downloads, staging = out / "downloads", out / "files"
    for stale in (staging, out / "carry", out / "scratch"):
        shutil.rmtree(stale, ignore_errors=True)
    needs = image.needed(repo / "pyproject.toml")
    carry = image.to_carry(needs)
    entries: list[tuple[str, str, Path]] = []
    sdist = trimmed_sdist(build_version(repo), downloads / "sdist", staging / "sdist")
    entries.append((f"sdist/{sdist.name}", "sdist", sdist))
    for req in (r for r in carry if image.name_of(r) in image.FROM_SDIST):
        built = sdist_of(req, downloads / "sdist", staging / "sdist")
        entries.append((f"sdist/{built.name}", "sdist", built))
    closure = wheels([r for r in carry if image.name_of(r) not in image.FROM_SDIST],
                     downloads / "wheels", staging / "wheels")
    entries += [(f"wheels/{w}", "wheel", staging / "wheels" / w) for w in closure["carried"]]
    entries += [(dest, "model", path) for dest, path, _ in model_files(repo)]
    tree = tree_bytes(repo)
    capacity = int((limit_mib - margin_mib) * MIB) - tree - plan.MANIFEST_ROOM
    manifest = write_parts(entries, capacity, out / "carry", out / "scratch", created)
    shutil.rmtree(out / "scratch", ignore_errors=True)
    in_image = sorted({image.name_of(r) for r in needs if image.name_of(r) in image.IMAGE}
                      | set(closure["image"]))
    (out / "closure.json").write_text(json.dumps(
        {"carried": closure["carried"], "image": in_image}, indent=1))
    text = plan.render(manifest, plan.Carry(out, repo, tree, limit_mib, margin_mib,
                                            _commit(repo)))
    (out / "PLAN.md").write_text(text)
    print(text)
    return manifest


def _commit(repo: Path) -> str:
    got = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True)
    return got.stdout.strip() or "?"
