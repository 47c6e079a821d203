#!/bin/sh
# Remove the appliance. Keeps the configuration (/etc/appliance) and the data
# (/var/lib/appliance: API keys, memory, audit log) unless --purge is given.
#   sudo /opt/appliance/uninstall.sh [--purge]
#   DESTDIR=/tmp/root ./uninstall.sh [--purge]      the same inside a staged root
set -eu
DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/opt/appliance}
root="$DESTDIR"
purge=no
[ "${1:-}" = "--purge" ] && purge=yes
if [ -z "$DESTDIR" ]; then
  [ "$(id -u)" = 0 ] || { echo "uninstall: run as root" >&2; exit 1; }
  systemctl disable --now appliance.service 2>/dev/null || true
fi
rm -f "$root/etc/systemd/system/appliance.service" "$root/usr/local/bin/appliance"
rm -rf "$root$PREFIX"
[ -z "$DESTDIR" ] && systemctl daemon-reload 2>/dev/null || true
if [ "$purge" = yes ]; then
  rm -rf "$root/etc/appliance" "$root/var/lib/appliance"
  if [ -z "$DESTDIR" ]; then
    userdel appliance 2>/dev/null || true
    groupdel appliance 2>/dev/null || true
  fi
  echo "uninstall: removed, with configuration and data"
else
  echo "uninstall: removed; kept /etc/appliance and /var/lib/appliance (--purge removes them)"
fi
