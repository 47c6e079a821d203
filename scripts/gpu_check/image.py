"""What the GPU machine's image already holds, and what the appliance needs on top of it.

The image: a CUDA image with PyTorch, Python 3.12 (``python3``, a venv of its own), CUDA's
compiler, CMake and ninja, and the Python packages below (their names as read on such a
machine on 2026-11-17; versions where they were read). Whatever the appliance needs and
the image lacks is carried as Python 3.12 wheels (or, for hnswlib, which publishes no
wheel, as its sdist, built there).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

PYTHON = "3.12"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")

IMAGE = frozenset("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs
botorch build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy
coverage cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython
diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools formulaic
frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize
hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib
jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator
lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes
mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals networkx
ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc
nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand
nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13
nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging
pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client propcache
protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions
pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil
pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core
scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools
shellingham simplejson six sortedcontainers statsmodels sympy tabulate tensorboard
tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz
torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers
treescope triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig
werkzeug wheel wrapt xarray xxhash yarl zipp
""".split())  # noqa: SIM905 (a word list, as pip freeze names them)

# The versions read there (the rest: whatever the image has). The dry run's stand-in for
# the image installs these, so the appliance is checked against them here too.
IMAGE_VERSIONS = {"numpy": "2.5.2", "onnx": "1.23.1", "onnxruntime": "1.30.0",
                  "tokenizers": "0.23.2", "huggingface-hub": "1.33.0"}

# Built there from the sdist: no wheel is published.
FROM_SDIST = frozenset({"hnswlib"})
# The wheel's own runtime needs (llama-cpp-python's pyproject) and its build backend.
LLAMA_CPP_NEEDS = ("typing-extensions>=4.5.0", "numpy>=1.20.0", "diskcache>=5.6.1",
                   "jinja2>=2.11.3")
BUILD_NEEDS = ("scikit-build-core>=0.9.2", "setuptools>=65", "wheel", "pybind11")


def name_of(requirement: str) -> str:
    """The normalised project name of a requirement or a distribution file name."""
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    if match is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def wheel_name(filename: str) -> str:
    """``pydantic_core-2.5-cp312-...whl`` -> ``pydantic-core``."""
    return name_of(filename.split("-", 1)[0])


def project_requirements(pyproject: Path) -> tuple[list[str], list[str]]:
    """(runtime dependencies, the dev extra) of the appliance's pyproject.toml."""
    data = tomllib.loads(pyproject.read_text())["project"]
    return list(data["dependencies"]), list(data["optional-dependencies"]["dev"])


def needed(pyproject: Path) -> list[str]:
    """Every requirement of the run: the appliance's dependencies (llama-cpp-python is
    built there, so its own needs instead), the openai client of the smoke, the builds'."""
    runtime, dev = project_requirements(pyproject)
    openai = [r for r in dev if name_of(r) == "openai"]
    out = [r for r in runtime if name_of(r) != "llama-cpp-python"]
    out += [r for r in LLAMA_CPP_NEEDS if name_of(r) not in {name_of(x) for x in out}]
    return out + openai + list(BUILD_NEEDS)


def to_carry(requirements: list[str]) -> list[str]:
    """The requirements the image lacks."""
    return [r for r in requirements if name_of(r) not in IMAGE]
