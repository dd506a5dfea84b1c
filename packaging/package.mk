# Packages: `make package` builds target/debian/*.deb and target/generate-rpm/*.rpm;
# `make package-test` checks them (packaging/test-packages.sh).

.PHONY: package package-tools package-test

package-tools:
	@command -v cargo-deb >/dev/null 2>&1 || $(CARGO) install --locked cargo-deb
	@command -v cargo-generate-rpm >/dev/null 2>&1 || $(CARGO) install --locked cargo-generate-rpm

package: build package-tools
	$(CARGO) run --release --locked --example gen-assets -- target/assets
	$(CARGO) deb --no-build
	$(CARGO) generate-rpm

package-test: package
	./packaging/test-packages.sh
