#!/usr/bin/env bash
# Checks the built packages: the .deb unpacked with dpkg-deb (layout, conffile flag, unit,
# maintainer scripts), the .rpm's file list, config files and scriptlets with rpm.
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
if command -v systemd-analyze >/dev/null 2>&1; then
  tmp=$(mktemp -d)
  sed "s#/usr/bin/receptord#$root/usr/bin/receptord#g" "$unit" > "$tmp/receptord.service"
  check "systemd-analyze verify" systemd-analyze verify "$tmp/receptord.service"
  cat "$root/usr/share/receptord/systemd/hop.conf" >> "$tmp/receptord.service"
  check "systemd-analyze verify (hop profile)" systemd-analyze verify "$tmp/receptord.service"
  rm -rf "$tmp"
fi

rpm=$(ls -t target/generate-rpm/*.rpm | head -n1)
if ! command -v rpm >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  apt-get install -y -qq rpm >/dev/null 2>&1 || true
fi
if command -v rpm >/dev/null 2>&1; then
  list=$(rpm -qlp "$rpm" 2>/dev/null)
  for f in /usr/bin/receptord /usr/bin/receptor /etc/receptor.toml /usr/lib/systemd/system/receptord.service \
           /usr/lib/sysusers.d/receptord.conf /usr/lib/tmpfiles.d/receptord.conf \
           /usr/share/receptord/systemd/hop.conf /usr/share/doc/receptord/grafana-dashboard.json; do
    check "rpm holds $f" grep -qx "$f" <<< "$list"
  done
  check "rpm marks /etc/receptor.toml as config" sh -c "rpm -qcp '$rpm' 2>/dev/null | grep -qx /etc/receptor.toml"
  check "rpm scriptlets present" sh -c "rpm -qp --scripts '$rpm' 2>/dev/null | grep -q 'systemctl try-restart receptord'"
else
  echo "rpm is not installable here: .rpm checked for existence only"
  check "rpm built" test -s "$rpm"
fi
echo "package checks: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
