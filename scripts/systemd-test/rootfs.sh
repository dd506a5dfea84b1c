#!/usr/bin/env bash
# Builds (once) the Debian 12 root filesystem the real-systemd test boots: debootstrap
# minbase with systemd, then apt inside it for sudo and ansible-runner (Debian's own
# packages). Cached outside the clone under $ROOTFS_CACHE; the cache key is the package
# list and this script, and a rootfs is only moved into place once complete, so an interrupted build is
# never used. Prints the rootfs path on stdout.
set -euo pipefail
CACHE=${ROOTFS_CACHE:-/var/cache/receptord-test}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
BOOT_PKGS="systemd,systemd-sysv,dbus"
APT_PKGS="sudo python3 ansible-core python3-ansible-runner"
key=$( (printf '%s\n' "$SUITE" "$BOOT_PKGS" "$APT_PKGS"; cat "$0") | sha256sum | cut -c1-12)
root="$CACHE/debian12-$key"
if [ -x "$root/usr/bin/ansible-runner" ] && [ -e "$root/.complete" ]; then
  echo "$root"
  exit 0
fi
mkdir -p "$CACHE"
tmp="$CACHE/.build-$key.$$"
cleanup() { umount -R "$tmp/proc" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
echo "building the Debian 12 rootfs in $tmp (first run only)" >&2
debootstrap --variant=minbase --include="$BOOT_PKGS" "$SUITE" "$tmp" "$MIRROR" >&2
mount -t proc proc "$tmp/proc"
chroot "$tmp" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $APT_PKGS >&2
umount "$tmp/proc"
chroot "$tmp" apt-get clean
# minbase has no /etc/hosts (ansible and sudo look up the host name) and no hostname.
printf '127.0.0.1 localhost\n127.0.1.1 rtest\n::1 localhost\n' > "$tmp/etc/hosts"
echo rtest > "$tmp/etc/hostname"
# Root may log in on the container console without a password (never used by the test).
chroot "$tmp" passwd -d root >/dev/null
touch "$tmp/.complete"
rm -rf "$root"
mv "$tmp" "$root"
trap - EXIT
echo "$root"
