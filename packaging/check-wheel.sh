#!/usr/bin/env bash
# The wheel of `make wheel` against its platform tag: its WHEEL file claims manylinux2014
# (glibc 2.17), and `auditwheel show` (from the venv), reading the bundled `receptor`, must
# find it consistent with that tag or an older one; the bundled binary also passes
# packaging/check-glibc.sh. Exits non-zero with the reason otherwise.
#   usage: check-wheel.sh WHEEL   (VENV: the project's virtualenv, holding auditwheel)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-$PWD/.venv}
[ $# = 1 ] && [ -f "$1" ] || { echo "usage: $0 WHEEL (one existing file)" >&2; exit 2; }
whl=$1
tags=$(unzip -p "$whl" '*.dist-info/WHEEL' | sed -n 's/^Tag: //p')
grep -qx 'py3-none-manylinux2014_x86_64' <<<"$tags" ||
  { echo "check-wheel: $whl: no py3-none-manylinux2014_x86_64 tag (tags: $(echo $tags))" >&2; exit 1; }
show=$("$VENV/bin/auditwheel" show "$whl" 2>&1 | tr -s ' \n' '  ') ||
  { echo "check-wheel: auditwheel show failed: $show" >&2; exit 1; }
policy=$(sed -n 's/.*consistent with the following platform tag: "\([^"]*\)".*/\1/p' <<<"$show")
minor=$(sed -n 's/^manylinux_2_\([0-9]*\)_x86_64$/\1/p' <<<"$policy")
[ -n "$minor" ] && [ "$minor" -le 17 ] ||
  { echo "check-wheel: auditwheel: $whl is consistent only with \"$policy\", not manylinux2014: $show" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
unzip -q -d "$tmp" "$whl" receptord/bin/receptor
./packaging/check-glibc.sh 2.17 "$tmp/receptord/bin/receptor" >/dev/null
echo "$(basename "$whl"): auditwheel: consistent with $policy (manylinux2014)"
