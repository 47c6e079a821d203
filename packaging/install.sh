#!/bin/sh
# Install the appliance from this unpacked offline bundle. Nothing is downloaded.
#   sudo ./install.sh                    install, create the `appliance` user, start the service
#   DESTDIR=/tmp/root ./install.sh       stage everything under a throw-away root instead
#                                        (no user is created, systemctl is not called)
#   PREFIX=/opt/appliance                where the executable and its models go (default)
# Every file of the bundle is checked against SHA256SUMS before anything is installed.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/opt/appliance}
root="$DESTDIR"
say() { printf 'install: %s\n' "$*"; }
die() { printf 'install: error: %s\n' "$*" >&2; exit 1; }

command -v sha256sum >/dev/null || die "sha256sum is needed (coreutils)"
say "verifying the bundle against SHA256SUMS"
(cd "$here" && sha256sum --check --quiet --strict SHA256SUMS) \
  || die "the bundle is damaged or altered (SHA256SUMS does not match); copy it again"

if [ -z "$DESTDIR" ]; then
  [ "$(id -u)" = 0 ] || die "run as root (or set DESTDIR to stage into a directory)"
  getent group appliance >/dev/null || groupadd --system appliance
  getent passwd appliance >/dev/null || useradd --system --gid appliance \
    --home-dir /var/lib/appliance --no-create-home --shell /usr/sbin/nologin \
    --comment "the appliance LLM server" appliance
  systemctl stop appliance.service 2>/dev/null || true
fi

say "installing into ${root}${PREFIX}"
install -d -m 0755 "$root$PREFIX" "$root$PREFIX/models" "$root/usr/local/bin" \
  "$root/etc/systemd/system" "$root/etc/appliance"
install -m 0755 "$here/appliance" "$root$PREFIX/appliance.new"
mv -f "$root$PREFIX/appliance.new" "$root$PREFIX/appliance"
rm -rf "$root$PREFIX/_internal" "$root$PREFIX/models" "$root$PREFIX/LICENSES"
# the executable's libraries (one-folder build) and the models beside it
if [ -d "$here/_internal" ]; then cp -R "$here/_internal" "$root$PREFIX/_internal"; fi
cp -R "$here/models" "$root$PREFIX/models"
cp -R "$here/LICENSES" "$root$PREFIX/LICENSES"
install -m 0644 "$here/README.md" "$here/SHA256SUMS" "$root$PREFIX/"
install -m 0755 "$here/uninstall.sh" "$root$PREFIX/uninstall.sh"
chmod -R u=rwX,go=rX "$root$PREFIX"
ln -sf "$PREFIX/appliance" "$root/usr/local/bin/appliance"

if [ -e "$root/etc/appliance/appliance.toml" ]; then
  say "keeping the existing /etc/appliance/appliance.toml (the new default is appliance.toml.new)"
  install -m 0644 "$here/appliance.toml" "$root/etc/appliance/appliance.toml.new"
else
  install -m 0644 "$here/appliance.toml" "$root/etc/appliance/appliance.toml"
fi
sed "s|/opt/appliance|$PREFIX|g" "$here/appliance.service" > "$root/etc/systemd/system/appliance.service"
chmod 0644 "$root/etc/systemd/system/appliance.service"
install -d -m 0750 "$root/var/lib/appliance"

say "checking the installed models against their pins"
"$root$PREFIX/appliance" models verify --config "$root/etc/appliance/appliance.toml" \
  --data-dir "$root/var/lib/appliance" >/dev/null \
  || die "the installed models fail their sha256 pins"

if [ -z "$DESTDIR" ]; then
  chown appliance:appliance /var/lib/appliance
  runuser -u appliance -- "$PREFIX/appliance" doctor --config /etc/appliance/appliance.toml \
    || say "doctor reported problems (above); fix them, then: systemctl restart appliance"
  systemctl daemon-reload
  systemctl enable --now appliance.service
  say "done: the appliance listens on http://127.0.0.1:8080/v1 (systemctl status appliance)"
else
  say "staged into $DESTDIR (no user created, service not started)"
fi
