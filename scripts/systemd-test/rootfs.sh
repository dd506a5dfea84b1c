#!/usr/bin/env bash
# Builds (once) a Debian root filesystem the real-systemd test boots: debootstrap minbase
# with systemd, then apt inside it (Debian's own packages).
#   rootfs.sh bookworm   Debian 12: sudo and Debian's ansible-core and ansible-runner.
#   rootfs.sh bullseye   Debian 11 (glibc 2.31, the floor check's witness): sudo, Python 3.9,
#       and, as Debian 11 packages no ansible-runner, ansible-runner and ansible-core from
#       bullseye-requirements.lock in the virtualenv /opt/ansible. The wheels are fetched
#       by the host's pip ($VENV, hash-checked, for CPython 3.9 on manylinux) and installed
#       in the root with --no-index: the root never reaches the network itself after apt.
# Cached outside the clone under $ROOTFS_CACHE as debian<N>-<key>, the key being the suite,
# the package lists, the lock and this script; a rootfs is only moved into place once
# complete, so an interrupted build is never used. Prints the rootfs path on stdout.
set -euo pipefail
SUITE=${1:?usage: rootfs.sh bookworm|bullseye}
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${ROOTFS_CACHE:-/var/cache/receptord-test}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
VENV=${VENV:-$HERE/../../.venv}
BOOT_PKGS="systemd,systemd-sysv,dbus"
LOCK=
case $SUITE in
  bookworm) N=12 APT_PKGS="sudo python3 ansible-core python3-ansible-runner" ;;
  bullseye) N=11 APT_PKGS="sudo python3 python3-venv" LOCK=$HERE/bullseye-requirements.lock ;;
  *) echo "rootfs.sh: unknown suite $SUITE" >&2; exit 2 ;;
esac
key=$( (printf '%s\n' "$SUITE" "$BOOT_PKGS" "$APT_PKGS"; cat "$0" ${LOCK:+"$LOCK"}) | sha256sum | cut -c1-12)
root="$CACHE/debian$N-$key"
if [ -e "$root/.complete" ]; then
  echo "$root"
  exit 0
fi
mkdir -p "$CACHE"
tmp="$CACHE/.build-$key.$$"
cleanup() { umount -R "$tmp/proc" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
# In the root, with nothing of the host's environment (pip settings, proxies, locale).
in_root() { chroot "$tmp" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"; }
echo "building the Debian $N rootfs in $tmp (first run only)" >&2
debootstrap --variant=minbase --include="$BOOT_PKGS" "$SUITE" "$tmp" "$MIRROR" >&2
mount -t proc proc "$tmp/proc"
in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $APT_PKGS >&2
if [ -n "$LOCK" ]; then
  # The platforms a glibc 2.31 host takes wheels for (pip does not derive older ones).
  plats=()
  for p in manylinux2014 manylinux_2_17 manylinux_2_24 manylinux_2_28 manylinux_2_31; do
    plats+=(--platform "${p}_x86_64")
  done
  mkdir "$tmp/root/wheels"
  "$VENV/bin/pip" download --quiet --disable-pip-version-check --no-input --require-hashes --no-deps \
    --only-binary :all: --implementation cp --python-version "$(in_root python3 -c 'import platform; print(platform.python_version())')" \
    --abi "cp$(in_root python3 -c 'import sys; print("%d%d" % sys.version_info[:2])')" "${plats[@]}" \
    -d "$tmp/root/wheels" -r "$LOCK" >&2
  cp "$LOCK" "$tmp/root/wheels/requirements.lock"
  in_root python3 -m venv /opt/ansible
  in_root /opt/ansible/bin/pip install --quiet --disable-pip-version-check --no-input --require-hashes \
    --no-deps --no-index --find-links /root/wheels -r /root/wheels/requirements.lock >&2
  rm -rf "$tmp/root/wheels"
  in_root /opt/ansible/bin/ansible-runner --version >/dev/null
fi
umount "$tmp/proc"
in_root apt-get clean
# minbase has no /etc/hosts (ansible and sudo look up the host name) and no hostname.
printf '127.0.0.1 localhost\n127.0.1.1 rtest\n::1 localhost\n' > "$tmp/etc/hosts"
echo rtest > "$tmp/etc/hostname"
# Root may log in on the container console without a password (never used by the test).
in_root passwd -d root >/dev/null
touch "$tmp/.complete"
rm -rf "$root"
mv "$tmp" "$root"
trap - EXIT
# Root filesystems of this suite built for an older package list or script are not used again.
for old in "$CACHE"/debian"$N"-*; do
  [ "$old" = "$root" ] || rm -rf "$old"
done
echo "$root"
