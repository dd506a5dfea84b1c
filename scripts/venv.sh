#!/usr/bin/env bash
# Creates (idempotently) the project-local virtualenv holding the real ansible-runner and
# ansible-core (and receptorctl) from PyPI, used by `make demo`, the tests and the benchmarks.
set -euo pipefail
VENV="${VENV:-$(cd "$(dirname "$0")/.." && pwd)/.venv}"
RUNNER_VERSION="${RUNNER_VERSION:-2.4.3}"
CORE_VERSION="${CORE_VERSION:-2.19.14}"
RECEPTORCTL_VERSION="${RECEPTORCTL_VERSION:-1.6.9}"
if [ -x "$VENV/bin/ansible-runner" ] && [ -x "$VENV/bin/ansible-playbook" ] && [ -x "$VENV/bin/receptorctl" ]; then
  exit 0
fi
[ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check \
  "ansible-runner==$RUNNER_VERSION" "ansible-core==$CORE_VERSION" "receptorctl==$RECEPTORCTL_VERSION"
"$VENV/bin/ansible-runner" --version >/dev/null
echo "virtualenv ready: $VENV"
