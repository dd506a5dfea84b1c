#!/usr/bin/env bash
# `make test-runner-suite`: ansible-runner's own integration tests (test_interface.py and
# test_events.py of the sdist requirements.lock pins) run with ansible_runner.run/run_async
# pointed at receptord.run/run_async through a local mesh (packaging/python/tests/
# runner_suite/receptord_shim.py). The sdist comes from PyPI, hash-checked against
# scripts/python/runner-suite.txt, unpacked under target/runner-suite/ (never committed).
# Expected differences are listed in docs/PYTHON.md. Env: VENV, RECEPTORD_BIN, RECEPTORD_DAEMON.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
venv=${VENV:-$root/.venv}
out=$root/target/runner-suite
version=$(sed -n 's/^ansible-runner==\([0-9.]*\).*/\1/p' scripts/python/runner-suite.txt)
locked=$(sed -n 's/^ansible-runner==\([0-9.]*\).*/\1/p' scripts/python/requirements.lock)
[ "$version" = "$locked" ] || { echo "runner-suite.txt pins $version, requirements.lock $locked" >&2; exit 1; }
src=$out/ansible_runner-$version
if [ ! -d "$src/test" ]; then
  rm -rf "$out" && mkdir -p "$out/dl"
  # The file itself, found through PyPI's simple index and checked against the pinned
  # hash; nothing is built (pip download would build the sdist's metadata with build
  # tools fetched unpinned).
  hash=$(sed -n 's/.*--hash=sha256:\([0-9a-f]*\).*/\1/p' scripts/python/runner-suite.txt | head -n 1)
  "$venv/bin/python" - "$version" "$hash" "$out/dl" <<'PY'
import hashlib, json, sys, urllib.request
version, want, dest = sys.argv[1:4]
name = f"ansible_runner-{version}.tar.gz"
req = urllib.request.Request("https://pypi.org/simple/ansible-runner/",
                             headers={"Accept": "application/vnd.pypi.simple.v1+json"})
with urllib.request.urlopen(req, timeout=120) as r:
    files = [f for f in json.load(r)["files"] if f["filename"] == name]
if not files:
    sys.exit(f"{name} is not on PyPI's index")
with urllib.request.urlopen(files[0]["url"], timeout=300) as r:
    data = r.read(64 << 20)
got = hashlib.sha256(data).hexdigest()
if got != want:
    sys.exit(f"{name}: sha256 {got}, runner-suite.txt pins {want}")
open(f"{dest}/{name}", "wb").write(data)
PY
  tar -xzf "$out/dl/ansible_runner-$version.tar.gz" -C "$out"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps --no-build-isolation ./packaging/python
cd "$src"
start=$(date +%s)
set +e
PATH="$venv/bin:$PATH" PYTHONPATH="$root/packaging/python/tests/runner_suite" \
  RECEPTORD_BIN="${RECEPTORD_BIN:-$root/target/release/receptor}" \
  RECEPTORD_DAEMON="${RECEPTORD_DAEMON:-$root/target/release/receptord}" \
  timeout -k 30 1800 "$venv/bin/python" -m pytest -p receptord_shim -p no:cacheprovider \
  -o addopts="-r a --strict-markers -Werror" --timeout 600 \
  test/integration/test_interface.py test/integration/test_events.py "$@"
rc=$?
set -e
echo "runner suite took $(( $(date +%s) - start )) s"
exit $rc
