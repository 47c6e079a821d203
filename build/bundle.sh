#!/usr/bin/env bash
# Build the appliance executable with PyInstaller (`make bundle`).
#   build/bundle.sh [onedir|onefile]       default: onedir (see build/README.md for why)
# onedir:  dist/appliance-onedir/{appliance,_internal/,models/} and the launcher
#          dist/appliance -> appliance-onedir/appliance (the file a user runs)
# onefile: dist/appliance-onefile/{appliance,models/} (kept for comparison)
# The model files are beside the executable, in models/ (appliance/resources.py).
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-onedir}"
python="${PYTHON:-.venv/bin/python}"
work="build/work/$mode"
out="dist/appliance-$mode"
case "$mode" in onedir|onefile) ;; *) echo "usage: build/bundle.sh onedir|onefile" >&2; exit 2 ;; esac
start=$(date +%s)
rm -rf "$work" "$out"
APPLIANCE_BUNDLE_MODE="$mode" "$python" -m PyInstaller --noconfirm --clean --log-level WARN \
  --workpath "$work" --distpath "$work/dist" build/appliance.spec
mkdir -p dist
if [ "$mode" = onedir ]; then
  mv "$work/dist/appliance" "$out"
  ln -sfn "appliance-onedir/appliance" dist/appliance
else
  mkdir -p "$out" && mv "$work/dist/appliance" "$out/appliance"
fi
"$python" build/collect_models.py "$out/models" ${BUNDLE_MODELS:+--only $BUNDLE_MODELS}
echo "bundle: $mode built in $(( $(date +%s) - start ))s: $out"
