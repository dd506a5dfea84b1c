# receptord — the two commands that matter on a fresh machine are `make demo` and `make test`.
CARGO ?= cargo
VENV  ?= $(CURDIR)/.venv
LOCK  ?= $(CURDIR)/scripts/python/requirements.lock

.PHONY: all build venv lock test-latest demo test test-python test-runner-suite wheel test-tools test-systemd systemd-test-tools lint fmt bench bench-fleet fuzz clean

all: build

build:
	$(CARGO) build --release --locked

# Project-local virtualenv with the real ansible-runner, ansible-core and receptorctl from
# PyPI: exactly scripts/python/requirements.lock, hash-checked; rebuilt when the lock changes.
venv:
	VENV=$(VENV) LOCK=$(LOCK) ./scripts/venv.sh

# Regenerates the lock from scripts/python/requirements.in (after editing it, or to take
# upstream releases on purpose; LOCK_UPGRADE=1 moves every unpinned package to its newest),
# and test-systemd's Debian 11 lock from scripts/systemd-test/bullseye-requirements.in.
lock:
	./scripts/lock.sh

# The early warning for the next upstream release (not part of CI): the newest versions the
# pins in requirements.in allow, in a throw-away venv, under the ansible and Python layers.
test-latest: build test-tools
	./scripts/test-latest.sh

# A local three-node mesh on 127.0.0.1 running a playbook via a remote node.
demo: build venv
	VENV=$(VENV) ./scripts/demo.sh

# Tools the tests drive for real: curl (scrapes /metrics), promtool (checks the exposition;
# Debian's `prometheus`), graphviz `dot` (checks `receptor status --graph`), rsvg-convert
# (renders `--svg` to PNG). Debian packages.
TEST_TOOLS_OK = command -v curl && command -v promtool && command -v dot && command -v rsvg-convert
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
test-tools:
	@{ $(TEST_TOOLS_OK); } >/dev/null 2>&1 || { \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
			curl prometheus graphviz librsvg2-bin >/dev/null; }

# Every test layer: unit, simulations, real daemons on loopback, real ansible-runner.
test: build venv test-tools
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --release --locked --no-fail-fast; \
	else \
		$(CARGO) test --release --locked --no-fail-fast; \
	fi
	$(MAKE) package-test
	$(MAKE) test-python

# The Python package (packaging/python): pip-installed into .venv, its pytest suite run
# against a real mesh of receptord daemons and the real ansible-runner (docs/PYTHON.md).
PY_PKG = packaging/python
test-python: build venv
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation ./$(PY_PKG)
	cd $(PY_PKG) && PATH="$(VENV)/bin:$$PATH" RECEPTORD_BIN="$(CURDIR)/target/release/receptor" \
		RECEPTORD_DAEMON="$(CURDIR)/target/release/receptord" $(VENV)/bin/python -m pytest -q -p no:cacheprovider tests

# ansible-runner's own integration tests (test_interface.py, test_events.py of the pinned
# sdist from PyPI, hash-checked: scripts/python/runner-suite.txt) with ansible_runner.run and
# run_async pointed at receptord.run/run_async through a local mesh; docs/PYTHON.md lists
# what cannot apply remotely.
test-runner-suite: build venv
	VENV=$(VENV) RECEPTORD_BIN="$(CURDIR)/target/release/receptor" \
		RECEPTORD_DAEMON="$(CURDIR)/target/release/receptord" ./scripts/runner-suite.sh

# target/wheels/receptord-*-py3-none-$(WHEEL_PLAT).whl, carrying the `receptor` of `make
# dist` (glibc 2.17, packaging/package.mk); `auditwheel show` must agree with the tag.
WHEEL_PLAT ?= manylinux_2_17_x86_64.manylinux2014_x86_64
wheel: dist venv
	rm -rf $(PY_PKG)/build $(PY_PKG)/receptord/bin target/wheels/receptord-* && mkdir -p $(PY_PKG)/receptord/bin
	cp $(DIST_DIR)/receptor $(PY_PKG)/receptord/bin/receptor
	RECEPTORD_WHEEL_PLAT=$(WHEEL_PLAT) $(VENV)/bin/pip wheel --quiet --disable-pip-version-check --no-deps \
		--no-build-isolation -w target/wheels ./$(PY_PKG); \
		rc=$$?; rm -rf $(PY_PKG)/receptord/bin $(PY_PKG)/build; exit $$rc
	VENV=$(VENV) ./packaging/check-wheel.sh target/wheels/receptord-*-py3-none-$(WHEEL_PLAT).whl

# The .deb under a real systemd: a Debian 12 root filesystem (debootstrap from Debian's
# mirror, cached in /var/cache/receptord-test) booted with systemd-nspawn, then a Debian 11
# one (glibc 2.31) for the glibc floor, with the wheel too. Needs root.
# See docs/systemd.md; prints "systemd checks: N passed, M failed".
test-systemd: package wheel venv systemd-test-tools
	timeout -k 30 1500 ./scripts/systemd-test/run.sh

systemd-test-tools:
	@if ! command -v debootstrap >/dev/null 2>&1 || ! command -v systemd-nspawn >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap systemd-container; \
	fi

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --locked --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --locked --no-deps --lib

fmt:
	$(CARGO) fmt --all

# Prints throughput, latency and memory figures (never asserts on time).
# The AWX figures are those of the shipped binaries (`build`: whole-program optimised),
# kept aside before `cargo bench` rebuilds target/release without LTO.
bench: build venv
	mkdir -p target/shipped && cp target/release/receptord target/release/receptor target/shipped/
	VENV=$(VENV) $(CARGO) bench --locked --bench mesh
	AWX_RECEPTORD=$(CURDIR)/target/shipped/receptord AWX_RECEPTOR=$(CURDIR)/target/shipped/receptor \
		$(CARGO) bench --locked --bench awx
	VENV=$(VENV) $(CARGO) bench --locked --bench ansible
	$(CARGO) bench --locked --bench work
	ulimit -n $$(ulimit -Hn) && $(CARGO) bench --locked --bench hostile
	$(CARGO) bench --locked --bench metrics
	$(CARGO) bench --locked --bench signing
	$(CARGO) bench --locked --bench origin
	$(CARGO) bench --locked --bench e2e
	$(CARGO) bench --locked --bench netceptor
	ulimit -n $$(ulimit -Hn) && $(CARGO) bench --locked --bench netceptor_fleet

# Fleet scale (issue 12): 103, 303 and 1,000 real daemons (FLEET_SIZES=103,303 to choose),
# Go Receptor at 103 when present, and the simulation at 1,000 and 10,000 nodes.
bench-fleet: build
	ulimit -n $$(ulimit -Hn) && $(CARGO) bench --locked --bench fleet

# Fuzzing with cargo-fuzz (libFuzzer) on the stable toolchain, without a sanitizer (the
# crate forbids unsafe code; see docs/FUZZING.md). Each target runs FUZZ_TIME seconds, one
# after another, niced; new inputs land in fuzz/corpus/<target>, which is then minimised
# in place. Crashes are written to fuzz/artifacts/<target>/ and stop the run.
FUZZ_TIME    ?= 60
FUZZ_TARGETS ?= frame handshake transmit_stream extract control_line mesh_events stream_records netceptor_packet netceptor_events
FUZZ_FLAGS   ?= --sanitizer none
# The saved corpus is kept small: after minimising, the smallest inputs up to this many bytes.
FUZZ_CORPUS_BYTES ?= 60000
fuzz: SHELL := /bin/bash
fuzz:
	@command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install --locked cargo-fuzz
	$(CARGO) test --release --locked --test fuzz_corpus -- --ignored write_fuzz_seeds
	cd fuzz && $(CARGO) fuzz build $(FUZZ_FLAGS)
	cd fuzz && for t in $(FUZZ_TARGETS); do \
		mkdir -p corpus/$$t regressions/$$t artifacts/$$t && \
		nice -n 19 $(CARGO) fuzz run $(FUZZ_FLAGS) $$t corpus/$$t regressions/$$t -- \
			-max_total_time=$(FUZZ_TIME) -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
			2>&1 | grep -E '^(stat::number_of_executed_units|stat::average_exec_per_sec|==|SUMMARY|panicked|.*Test unit written)' ; \
		[ "$${PIPESTATUS[0]}" = 0 ] || exit 1; \
		nice -n 19 $(CARGO) fuzz cmin $(FUZZ_FLAGS) $$t corpus/$$t >/dev/null 2>&1 || exit 1; \
		total=0; for f in $$(ls -Sr corpus/$$t); do \
			total=$$((total + $$(stat -c %s corpus/$$t/$$f))); \
			[ $$total -le $(FUZZ_CORPUS_BYTES) ] || rm corpus/$$t/$$f; \
		done; \
	done

clean:
	$(CARGO) clean
	rm -rf .demo

include packaging/package.mk
