"""``--standin DIR``: for the dry run, a stand-in for the GPU machine's Python: a Python
3.12 venv holding the image's packages that the appliance relies on (at the versions read
there, where known) and nothing the image lacks, so the dry run shows that the carried
wheels are enough. Needs the package registries; the dry run itself does not.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from gpu_check import image
from gpu_check.manifest import CheckError


def requirements(closure: Path) -> list[str]:
    """The image's packages the run relies on (written by --prepare), pinned where the
    image's version is known."""
    names = json.loads(closure.read_text())["image"]
    names = sorted(set(names) | {"pip", "setuptools", "wheel"})
    return [f"{n}=={image.IMAGE_VERSIONS[n]}" if n in image.IMAGE_VERSIONS else n
            for n in names]


def make(target: Path, python312: Path, closure: Path) -> list[str]:
    """Create the stand-in; returns the packages removed because the image lacks them."""
    if not closure.is_file():
        raise CheckError(f"{closure} is missing: run --prepare first")
    shutil.rmtree(target, ignore_errors=True)
    subprocess.run([python312, "-m", "venv", target], check=True)
    py = target / "bin" / "python"
    subprocess.run([py, "-m", "pip", "install", "-q", "--only-binary=:all:",
                    *requirements(closure)], check=True)
    listed = subprocess.run([py, "-m", "pip", "list", "--format=json"], check=True,
                            capture_output=True, text=True).stdout
    extra = sorted(p["name"] for p in json.loads(listed)
                   if image.name_of(p["name"]) not in image.IMAGE)
    if extra:
        subprocess.run([py, "-m", "pip", "uninstall", "-q", "-y", *extra], check=True)
    version = subprocess.run([py, "--version"], check=True, capture_output=True,
                             text=True).stdout.strip()
    if not version.startswith("Python 3.12"):
        raise CheckError(f"{python312} is {version}, not Python 3.12")
    print(f"stand-in ready: {target} ({version}); removed, the image lacks them: "
          f"{', '.join(extra) or 'none'}")
    return extra
