#!/usr/bin/env bash
# The glibc floor of the shipped binaries, checked on the ELF files themselves (`make
# package`, `make wheel`): every dynamic symbol version they need from glibc must be at
# most FLOOR, they may need only glibc's own libraries (no libgcc_s, libstdc++ or anything
# else a target host might lack or carry in an older version), and no other versioned
# dependency (GCC_*, GLIBCXX_*). Exits non-zero, naming each offending need, otherwise prints
# one line per binary: its highest GLIBC_ version and the libraries it needs.
#   usage: check-glibc.sh FLOOR BINARY...      (FLOOR as 2.17)
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 FLOOR BINARY..." >&2; exit 2; }
floor=$1; shift
command -v readelf >/dev/null || { echo "check-glibc: readelf (binutils) is needed" >&2; exit 2; }
# glibc's own libraries on x86-64 and aarch64: whatever glibc version a host has, it has these.
allowed='^(libc\.so\.6|libm\.so\.6|libpthread\.so\.0|libdl\.so\.2|librt\.so\.1|libutil\.so\.1|ld-linux-x86-64\.so\.2|ld-linux-aarch64\.so\.1)$'
# version_le A B: A <= B, as dotted numbers (2.9 < 2.17).
version_le() { [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n1)" = "$1" ]; }
bad=0
for bin in "$@"; do
  [ -f "$bin" ] || { echo "check-glibc: $bin: no such file" >&2; exit 2; }
  needed=$(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
  [ -n "$needed" ] || { echo "$bin: not dynamically linked against glibc (static?)"; continue; }
  for lib in $needed; do
    grep -Eq "$allowed" <<<"$lib" || { echo "$bin: needs $lib, which is not part of glibc"; bad=1; }
  done
  # readelf -V: under "Version needs", a "File: libX" line, then that file's "Name: VERSION" lines.
  needs=$(readelf -V "$bin" | awk '
    /^Version needs section/ { on = 1; next }
    /^Version (definition|symbols) section/ { on = 0 }
    on && /File:/ { for (i = 1; i <= NF; i++) if ($i == "File:") file = $(i + 1) }
    on && /Name:/ { for (i = 1; i <= NF; i++) if ($i == "Name:") print file, $(i + 1) }')
  [ -n "$needs" ] || { echo "$bin: readelf found no symbol version needs" >&2; bad=1; continue; }
  top=0
  while read -r file ver; do
    case $ver in
      GLIBC_PRIVATE) echo "$bin: needs GLIBC_PRIVATE from $file"; bad=1 ;;
      GLIBC_[0-9]*)
        v=${ver#GLIBC_}
        version_le "$v" "$floor" || { echo "$bin: needs $ver from $file (floor: GLIBC_$floor)"; bad=1; }
        version_le "$v" "$top" || top=$v ;;
      *) echo "$bin: needs $ver from $file (only glibc versions are expected)"; bad=1 ;;
    esac
  done <<<"$needs"
  echo "$bin: highest GLIBC_$top (floor GLIBC_$floor); needs $(echo $needed)"
done
if [ "$bad" != 0 ]; then
  echo "check-glibc: the binaries above need more than glibc $floor provides" >&2
  exit 1
fi
