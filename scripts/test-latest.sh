#!/usr/bin/env bash
# `make test-latest` (not part of CI): the early warning for the next upstream release.
# Resolves the newest versions that the pins in scripts/python/requirements.in allow (the
# tracked lock is ignored), builds them into a throw-away venv, prints what differs from the
# lock, and runs the layers that drive Python programs — the Rust test binaries that run
# ansible-runner, ansible-playbook or receptorctl, and the Python package's suite — against it.
# A failure here is a break that the next `make lock` would bring in.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
tmp=$(mktemp -d /var/tmp/receptord-latest.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
LOCK_OUT="$tmp/latest.lock" LOCK_UPGRADE=1 ./scripts/lock.sh >/dev/null
VENV="$tmp/venv" LOCK="$tmp/latest.lock" ./scripts/venv.sh
pins() { grep -oE '^[A-Za-z0-9][A-Za-z0-9._-]*==[^ ]+' "$1" | sort; }
echo "--- newer than scripts/python/requirements.lock:"
comm -13 <(pins scripts/python/requirements.lock) <(pins "$tmp/latest.lock") | sed 's/^/  /' || true
tests=()
for t in $(grep -l 'venv_bin\|path_with_venv\|with_ansible' tests/*.rs); do
  tests+=(--test "$(basename "$t" .rs)")
done
rc=0
RECEPTORD_VENV="$tmp/venv" cargo nextest run --release --locked --no-fail-fast "${tests[@]}" || rc=1
make --no-print-directory test-python VENV="$tmp/venv" LOCK="$tmp/latest.lock" || rc=1
[ "$rc" = 0 ] && echo "test-latest: passed with the newest allowed versions" \
  || echo "test-latest: FAILED with the newest allowed versions (see above)" >&2
exit "$rc"
