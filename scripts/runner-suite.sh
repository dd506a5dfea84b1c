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
  "$venv/bin/pip" download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
    --require-hashes -r scripts/python/runner-suite.txt -d "$out/dl"
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
