#!/usr/bin/env bash
# `make offline-bundle`: one archive with everything an air-gapped workstation needs.
#   packaging/make_offline_bundle.sh        (after `make bundle`: dist/appliance-onedir/)
# Output: dist/appliance-offline-<version>-linux-<arch>.tar.gz, unpacking to one directory:
#   appliance  _internal/  models/  SHA256SUMS  appliance.toml  appliance.service
#   install.sh  uninstall.sh  LICENSES/  README.md
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-.venv/bin/python}"
built=dist/appliance-onedir
[ -x "$built/appliance" ] && [ -d "$built/models" ] || { echo "run make bundle first" >&2; exit 1; }
version=$("$python" -c 'import tomllib; print(tomllib.load(open("pyproject.toml","rb"))["project"]["version"])')
name="appliance-offline-${version}-linux-$(uname -m)"
stage="build/work/offline/$name"
rm -rf "build/work/offline" && mkdir -p "$stage"
cp -R "$built/." "$stage/"
rm -f "$stage/models/SHA256SUMS"  # the bundle's SHA256SUMS covers every file, models included
cp packaging/appliance.toml packaging/appliance.service packaging/install.sh \
   packaging/uninstall.sh "$stage/"
cp packaging/README-IT.md "$stage/README.md"
"$python" packaging/collect_licences.py "$stage/LICENSES" build/work/onedir/appliance
(cd "$stage" && find . -type f ! -name SHA256SUMS -printf '%P\n' | LC_ALL=C sort \
  | xargs -d '\n' sha256sum > SHA256SUMS)
# Model weights barely compress: gzip -1 is as small as -9 here and much faster.
tar -C build/work/offline -I "gzip -1" -cf "dist/$name.tar.gz" "$name"
echo "offline bundle: dist/$name.tar.gz ($(du -h "dist/$name.tar.gz" | cut -f1))"
