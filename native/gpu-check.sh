#!/usr/bin/env bash
# The GPU check: builds the CUDA wheel and llama-server for this machine's GPU only, runs
# the end-to-end smoke with every layer offloaded and the side-by-side with llama-server,
# and writes one results file; offline, from files prepared where the registries answer.
#   native/gpu-check.sh --prepare .gpu-check            here (network): gather, pin, plan
#   native/gpu-check.sh --stash .gpu-check/carry/call-N  on the GPU machine, each call
#   native/gpu-check.sh --out "$OUT"                     on the GPU machine, the last call
#   native/gpu-check.sh --dry-run ...                    the same here, CPU backend
# See native/README.md ("The GPU check"). The driver is scripts/gpu_check/ (standard
# library only); GPU_CHECK_PYTHON names its interpreter (default: python3, or for
# --prepare the project's .venv, where the model packages are installed).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
python="${GPU_CHECK_PYTHON:-python3}"
if [ -z "${GPU_CHECK_PYTHON:-}" ] && [ "${1:-}" = "--prepare" ] && [ -x "$repo/.venv/bin/python" ]; then
  python="$repo/.venv/bin/python"
fi
export PYTHONPATH="$repo/scripts${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# GPU_CHECK_EXTRA: arguments added to every call (the dry run's replay of the plan uses it).
# shellcheck disable=SC2086
exec "$python" -m gpu_check "$@" ${GPU_CHECK_EXTRA:-}
