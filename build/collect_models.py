"""Put the model files beside the executable: DEST/models/<module>/<inner> for packaged files,
DEST/models/<file> for assembled ones, plus DEST/models/SHA256SUMS (sha256sum format).

Run with the development venv (the model packages must be installed and assembled:
`make install`). Every file is checked against its pin while it is copied; the appliance
checks it again before it loads it (appliance/resources.py says where it looks).

    python build/collect_models.py DEST [--only ID ...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from appliance import config  # noqa: E402
from appliance.engine.models import ModelStore  # noqa: E402
from appliance.resources import sha256_file  # noqa: E402
from appliance.resources import locate_part  # noqa: E402


def _place(src: Path, dest: Path, sha256: str) -> None:
    actual = sha256_file(src)
    if actual != sha256:
        raise SystemExit(f"collect_models: {src} fails its pin ({actual} != {sha256})")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        dest.unlink()
    try:
        os.link(src, dest)  # same filesystem: no copy of hundreds of MB
    except OSError:
        shutil.copyfile(src, dest)


def collect(dest: Path, only: set[str]) -> list[tuple[str, str]]:
    settings = config.load(env={})
    store = ModelStore(settings.manifest, settings.models_dir)
    sums: list[tuple[str, str]] = []
    for spec in store.specs:
        if only and spec.id not in only:
            continue
        assert spec.sha256 is not None
        rel = spec.file if spec.assembled else spec.parts[0]
        _place(store.location(spec), dest / rel, spec.sha256)
        sums.append((spec.sha256, rel))
    guards = tomllib.loads((REPO / "models" / "guards" / "manifest.toml").read_text())
    for key in ("model", "tokenizer"):
        pin = guards["encoder"][key]
        _place(locate_part(pin["part"]), dest / pin["part"], pin["sha256"])
        sums.append((pin["sha256"], pin["part"]))
    return sums


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path, help="the models folder to fill")
    parser.add_argument("--only", nargs="*", default=[], help="only these chat model ids")
    args = parser.parse_args()
    sums = collect(args.dest, set(args.only))
    lines = "".join(f"{digest}  {rel}\n" for digest, rel in sorted(sums, key=lambda s: s[1]))
    (args.dest / "SHA256SUMS").write_text(lines)
    print(f"collect_models: {len(sums)} files in {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
