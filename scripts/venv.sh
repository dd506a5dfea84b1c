#!/usr/bin/env bash
# Creates the project-local virtualenv (ansible-runner, ansible-core, receptorctl, pytest,
# the build tools) from scripts/python/requirements.lock and nothing else: every file
# hash-checked (pip --require-hashes), no dependency resolved here (--no-deps), wheels only.
# The venv is keyed by the lock's sha256 and the interpreter: when either changes it is
# removed and built again, so an old environment can never stand in for the lock. Used by
# `make venv` (and so `make demo`, `make test`, the benchmarks).
#   VENV=DIR builds elsewhere; LOCK=FILE installs another lock (make test-latest).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
VENV="${VENV:-$REPO/.venv}"
LOCK="${LOCK:-$REPO/scripts/python/requirements.lock}"
PYTHON="${PYTHON:-python3}"
key="$(sha256sum <"$LOCK" | cut -d' ' -f1) $("$PYTHON" -c 'import sys; print(sys.version.split()[0])')"
stamp="$VENV/.receptord-lock"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ]; then
  exit 0
fi
if [ -e "$VENV" ]; then
  echo "virtualenv $VENV was built from another lock or Python: rebuilding it" >&2
  rm -rf "$VENV"
fi
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
  --require-hashes --no-deps --only-binary :all: -r "$LOCK"
# Nothing but the lock: the interpreter's own bootstrap (pip, setuptools) is replaced by the
# locked versions above, and anything else would mean the lock is incomplete.
extra=$("$VENV/bin/python" - "$LOCK" <<'PY'
import re, sys
from importlib import metadata
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
locked = {norm(m.group(1)): m.group(2) for m in
          re.finditer(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", open(sys.argv[1]).read(), re.M)}
for d in metadata.distributions():
    name, ver = norm(d.metadata["Name"]), d.version
    if locked.get(name) != ver:
        print(f"{name}=={ver}")
PY
)
if [ -n "$extra" ]; then
  echo "virtualenv $VENV holds packages that are not in $LOCK:" >&2
  echo "$extra" >&2
  exit 1
fi
"$VENV/bin/ansible-runner" --version >/dev/null
echo "$key" >"$stamp"
echo "virtualenv ready: $VENV (from $(basename "$LOCK"))"
