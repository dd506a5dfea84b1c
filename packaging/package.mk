# Packages: `make package` builds target/debian/*.deb and target/generate-rpm/*.rpm;
# `make package-test` checks them (packaging/test-packages.sh).
#
# What is shipped (the .deb, the .rpm, the wheel of `make wheel`) is not `make build`'s
# native binary: `make dist` builds receptord and receptor with cargo-zigbuild against
# glibc $(GLIBC_FLOOR) (zig's own libc stubs of that version, zig from the venv's ziglang),
# into target/$(DIST_TARGET)/release, then packaging/check-glibc.sh fails the build if any
# dynamic symbol needs a newer glibc or a library outside glibc (docs/systemd.md).

.PHONY: dist package package-tools package-test

DIST_TARGET ?= x86_64-unknown-linux-gnu
GLIBC_FLOOR ?= 2.17
DIST_DIR    := target/$(DIST_TARGET)/release
DIST_BINS   := $(DIST_DIR)/receptord $(DIST_DIR)/receptor

package-tools:
	@command -v cargo-deb >/dev/null 2>&1 || $(CARGO) install --locked cargo-deb
	@command -v cargo-generate-rpm >/dev/null 2>&1 || $(CARGO) install --locked cargo-generate-rpm

# cargo finds cargo-zigbuild, and cargo-zigbuild finds zig (`python3 -m ziglang`), on PATH.
dist: venv
	PATH="$(VENV)/bin:$$PATH" $(CARGO) zigbuild --release --locked --bins --target $(DIST_TARGET).$(GLIBC_FLOOR)
	./packaging/check-glibc.sh $(GLIBC_FLOOR) $(DIST_BINS)

# cargo-deb and cargo-generate-rpm read the assets' target/release/ as target/$(DIST_TARGET)/release/.
# The .rpm's payload is gzip: rpm before 4.14 (RHEL 7) cannot read zstd.
package: dist package-tools
	$(CARGO) run --release --locked --example gen-assets -- target/assets
	$(CARGO) deb --no-build --target $(DIST_TARGET) --output target/debian/
	mkdir -p target/generate-rpm
	$(CARGO) generate-rpm --target $(DIST_TARGET) --payload-compress gzip --output target/generate-rpm/

package-test: package
	./packaging/test-packages.sh
