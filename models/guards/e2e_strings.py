"""The check a candidate network passes before ``make test`` (models/README.md, seventh and
eighth rounds): every string constant of ``tests/e2e/*.py`` through both presets' input rail.

    python models/guards/e2e_strings.py > OLD.jsonl       one JSON line per string:
                                                          {"text", "file", "default", "clinic"}
                                                          (true: served)
    python models/guards/e2e_strings.py --against OLD.jsonl
                                                          the strings the network in the
                                                          checkout blocks and OLD's served

Most strings are identifiers, messages and docstrings that no test sends; the ones it lists
are read by hand, and a prompt that a test sends to be served fails the round. Prompts the
tests compose at run time are not string constants: ``make test`` covers them.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

from appliance.guards.rails import Guards

TESTS = Path(__file__).resolve().parents[2] / "tests" / "e2e"
POLICIES = ("default", "clinic")


def strings(folder: Path) -> Iterator[tuple[str, str]]:
    """(file name, text) for each distinct string constant of 3 to 4,000 characters with a
    letter in it."""
    seen: set[str] = set()
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
                if 3 <= len(text) <= 4000 and any(c.isalpha() for c in text) \
                        and text not in seen:
                    seen.add(text)
                    yield path.name, text


async def served(rows: list[tuple[str, str]]) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {text: {"file": name} for name, text in rows}
    for policy in POLICIES:
        guards = Guards.load(default_policy=policy, threads=1)
        try:
            rails = guards.rails()
            for _, text in rows:
                out[text][policy] = (await guards.check_text(text, "user", rails)).allowed
        finally:
            guards.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", type=Path, help="an earlier run's output")
    args = parser.parse_args()
    now = asyncio.run(served(list(strings(TESTS))))
    if args.against is None:
        for text, row in now.items():
            print(json.dumps({"text": text, **row}, ensure_ascii=False))
        return 0
    before = {}
    for line in args.against.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        before[row["text"]] = row
    newly = [(row["file"], text) for text, row in now.items()
             if any(before.get(text, {}).get(p) and not row[p] for p in POLICIES)]
    for name, text in newly:
        print(f"{name}: {text[:140]!r}")
    blocked = sum(not row["default"] for row in now.values())
    print(f"{len(now)} strings; blocked under default: {blocked}; newly blocked: {len(newly)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
