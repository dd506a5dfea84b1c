#!/usr/bin/env bash
# Checks the built packages: the .deb unpacked with dpkg-deb (layout, conffile flag, unit,
# maintainer scripts), the .rpm's file list, config files and scriptlets with rpm, and in
# both the glibc floor of the binaries and the dependencies declared for it.
set -euo pipefail
cd "$(dirname "$0")/.."
pass=0
fail=0
check() { # description, command...
  local what=$1; shift
  if "$@" >/dev/null 2>&1; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAILED: $what"; fi
}

deb=$(ls -t target/debian/*.deb | head -n1)
root=$(mktemp -d) ctrl=$(mktemp -d)
trap 'rm -rf "$root" "$ctrl"' EXIT
dpkg-deb -x "$deb" "$root"
dpkg-deb -e "$deb" "$ctrl"
for f in usr/bin/receptord usr/bin/receptor etc/receptor.toml usr/lib/sysusers.d/receptord.conf \
         usr/lib/tmpfiles.d/receptord.conf usr/share/doc/receptord/receptor.toml.example \
         usr/share/receptord/systemd/hop.conf usr/share/doc/receptord/systemd.md \
         usr/share/bash-completion/completions/receptor usr/share/zsh/vendor-completions/_receptor \
         usr/share/fish/vendor_completions.d/receptor.fish usr/share/doc/receptord/grafana-dashboard.json; do
  check "deb holds /$f" test -e "$root/$f"
done
unit=$(find "$root" -name receptord.service | head -n1)
check "deb holds the systemd unit" test -n "$unit"
check "deb holds man pages" sh -c "ls '$root'/usr/share/man/man1/ | grep -q '^receptor-run.1'"
check "/etc/receptor.toml is a conffile" grep -qx /etc/receptor.toml "$ctrl/conffiles"
for s in postinst prerm postrm; do
  check "$s exists" test -x "$ctrl/$s"
  check "$s parses (sh -n)" sh -n "$ctrl/$s"
done
check "postinst creates the user" grep -q systemd-sysusers "$ctrl/postinst"
check "postinst creates the user without systemd-sysusers" grep -q "useradd --system" "$ctrl/postinst"
check "postinst runs systemd-sysusers once" test "$(grep -cE '^[[:space:]]*systemd-sysusers ' "$ctrl/postinst")" = 1
check "postinst runs systemd-tmpfiles once" test "$(grep -cE '^[[:space:]]*systemd-tmpfiles --create' "$ctrl/postinst")" = 1
check "the hop profile is not applied by default" sh -c "! find '$root' -path '*receptord.service.d*' | grep -q ."
check "postinst enables the unit" grep -q "deb-systemd-helper.*enable" "$ctrl/postinst"
check "postinst restarts on upgrade" grep -Eq "restart|try-restart" "$ctrl/postinst"
check "prerm stops on removal" grep -Eq "stop" "$ctrl/prerm"
check "prerm stops work units on removal" grep -q "kill -TERM" "$ctrl/prerm"
check "prerm touches only this service's processes (its cgroup, its data dir)" sh -c "grep -q 'ControlGroup receptord.service' '$ctrl/prerm' && grep -q -- '--supervise-unit' '$ctrl/prerm'"
check "postrm drops state on purge" grep -q "rm -rf /var/lib/receptor" "$ctrl/postrm"
check "postrm drops /etc/receptor on purge" grep -q "rmdir /etc/receptor" "$ctrl/postrm"
check "the shipped config validates" "$root/usr/bin/receptord" --check-config -c "$root/etc/receptor.toml"
# The glibc floor (docs/systemd.md): the shipped binaries need nothing newer than 2.17 and
# nothing outside glibc, the metadata says so, and the check can fail.
check "deb binaries need at most GLIBC_2.17, only glibc" \
  ./packaging/check-glibc.sh 2.17 "$root/usr/bin/receptord" "$root/usr/bin/receptor"
check "deb Depends: libc6 (>= 2.17)" test "$(dpkg-deb -f "$deb" Depends)" = "libc6 (>= 2.17)"
check "the floor check fails a binary above its floor" \
  sh -c "! ./packaging/check-glibc.sh 2.16 '$root/usr/bin/receptord'"
if [ -x target/release/receptord ] && [ "$(getconf GNU_LIBC_VERSION | sed 's/.* 2\.//')" -ge 34 ]; then
  # `make build`'s native binary, linked on this glibc >= 2.34, needs its __libc_start_main.
  check "the floor check fails the native build" sh -c "! ./packaging/check-glibc.sh 2.17 target/release/receptord"
fi
if command -v systemd-analyze >/dev/null 2>&1; then
  tmp=$(mktemp -d)
  sed "s#/usr/bin/receptord#$root/usr/bin/receptord#g" "$unit" > "$tmp/receptord.service"
  check "systemd-analyze verify" systemd-analyze verify "$tmp/receptord.service"
  cat "$root/usr/share/receptord/systemd/hop.conf" >> "$tmp/receptord.service"
  check "systemd-analyze verify (hop profile)" systemd-analyze verify "$tmp/receptord.service"
  rm -rf "$tmp"
fi

rpm=$(ls -t target/generate-rpm/*.rpm | head -n1)
if ! { command -v rpm && command -v cpio; } >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 &&
  [ "$(id -u)" = 0 ]; then
  apt-get install -y -qq rpm cpio >/dev/null 2>&1 || true
fi
if command -v rpm >/dev/null 2>&1 && command -v cpio >/dev/null 2>&1; then
  list=$(rpm -qlp "$rpm" 2>/dev/null)
  for f in /usr/bin/receptord /usr/bin/receptor /etc/receptor.toml /usr/lib/systemd/system/receptord.service \
           /usr/lib/sysusers.d/receptord.conf /usr/lib/tmpfiles.d/receptord.conf \
           /usr/share/receptord/systemd/hop.conf /usr/share/doc/receptord/grafana-dashboard.json; do
    check "rpm holds $f" grep -qx "$f" <<< "$list"
  done
  check "rpm marks /etc/receptor.toml as config" sh -c "rpm -qcp '$rpm' 2>/dev/null | grep -qx /etc/receptor.toml"
  check "rpm scriptlets present" sh -c "rpm -qp --scripts '$rpm' 2>/dev/null | grep -q 'systemctl try-restart receptord'"
  reqs=$(rpm -qp --requires "$rpm" 2>/dev/null)
  check "rpm requires libc.so.6(GLIBC_2.17)(64bit)" grep -qxF 'libc.so.6(GLIBC_2.17)(64bit)' <<<"$reqs"
  newer=$(sed -n 's/.*(GLIBC_2\.\([0-9]*\).*/\1/p' <<<"$reqs" | awk '$1 > 17')
  check "rpm requires no glibc version above 2.17" test -z "$newer"
  others=$(grep -E '^(lib|ld-)' <<<"$reqs" | grep -vE '^(libc|libm|libpthread|libdl|librt)\.so|^ld-linux' || true)
  check "rpm requires only glibc libraries" test -z "$others"
  check "rpm payload is gzip (rpm 4.11 reads it)" test "$(rpm -qp --qf '%{PAYLOADCOMPRESSOR}' "$rpm" 2>/dev/null)" = gzip
  rpmroot=$(mktemp -d)
  (cd "$rpmroot" && rpm2cpio "$OLDPWD/$rpm" | cpio -idm --quiet 2>/dev/null) || true
  check "rpm binaries need at most GLIBC_2.17, only glibc" \
    ./packaging/check-glibc.sh 2.17 "$rpmroot/usr/bin/receptord" "$rpmroot/usr/bin/receptor"
  rm -rf "$rpmroot"
else
  echo "rpm or cpio is not installable here: .rpm checked for existence only"
  check "rpm built" test -s "$rpm"
fi
echo "package checks: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
