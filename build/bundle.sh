#!/usr/bin/env bash
# Build the appliance executable with PyInstaller (`make bundle`).
#   build/bundle.sh [onefile|onedir]       default: onefile
# Output: dist/appliance (onefile) or dist/appliance-onedir/appliance (onedir), and the
# model files beside it in dist/models (resp. dist/appliance-onedir/models).
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-onefile}"
python="${PYTHON:-.venv/bin/python}"
work="build/work/$mode"
start=$(date +%s)
rm -rf "$work"
APPLIANCE_BUNDLE_MODE="$mode" "$python" -m PyInstaller --noconfirm --clean --log-level WARN \
  --workpath "$work" --distpath "$work/dist" build/appliance.spec
case "$mode" in
  onefile)
    mkdir -p dist && rm -f dist/appliance && mv "$work/dist/appliance" dist/appliance
    models=dist/models ;;
  onedir)
    rm -rf dist/appliance-onedir && mkdir -p dist
    mv "$work/dist/appliance" dist/appliance-onedir
    models=dist/appliance-onedir/models ;;
  *) echo "usage: build/bundle.sh onefile|onedir" >&2; exit 2 ;;
esac
rm -rf "$models"
"$python" build/collect_models.py "$models" ${BUNDLE_MODELS:+--only $BUNDLE_MODELS}
echo "bundle: $mode built in $(( $(date +%s) - start ))s"
