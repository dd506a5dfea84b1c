#!/usr/bin/env bash
# `make test-systemd`: the .deb under a real systemd. Boots a Debian 12 root filesystem
# (scripts/systemd-test/rootfs.sh, cached) with systemd-nspawn on a throw-away overlay,
# enters it with nsenter, and checks what an operator does: install, READY and STATUS,
# reload of listeners and peers, a `become` playbook that changes the host (via `receptor
# run --via-receptor` and via receptorctl work units), a unit surviving `systemctl
# restart` and `apt install --reinstall`, the watchdog staying quiet while idle, the hop
# profile, stop, remove (units stopped), purge (nothing left), and an install without
# systemd-sysusers. Then the glibc floor on an older distribution: a Debian 11 root
# (glibc 2.31) where the same .deb installs and serves, a `become` playbook runs through
# the service with `receptor run --via-receptor`, and the wheel of `make wheel` installs
# and runs one with `receptord.run` (scripts/systemd-test/bullseye.sh). Every wait is
# bounded; the container and overlay are torn down on any exit. Prints "systemd checks:
# N passed, M failed".
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
VENV=${VENV:-$REPO/.venv}
export VENV
START=$(date +%s)
[ "$(id -u)" = 0 ] || { echo "test-systemd: must run as root (debootstrap, nspawn)" >&2; exit 1; }
deb=$(ls -t "$REPO"/target/debian/receptord_*.deb 2>/dev/null | head -n1 || true)
[ -n "$deb" ] || { echo "test-systemd: no .deb under target/debian (make package)" >&2; exit 1; }
whl=$(ls -t "$REPO"/target/wheels/receptord-*manylinux2014_x86_64.whl 2>/dev/null | head -n1 || true)
[ -n "$whl" ] || { echo "test-systemd: no manylinux2014 wheel under target/wheels (make wheel)" >&2; exit 1; }
[ -x "$VENV/bin/receptorctl" ] || { echo "test-systemd: no receptorctl in $VENV (make venv)" >&2; exit 1; }

W=
NSPAWN_PID=
PID1=
# Powers the container off (nspawn does on SIGTERM), then drops its overlay.
stop_container() {
  if [ -n "$NSPAWN_PID" ] && kill -0 "$NSPAWN_PID" 2>/dev/null; then
    kill -TERM "$NSPAWN_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$NSPAWN_PID" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$NSPAWN_PID" 2>/dev/null || true
    wait "$NSPAWN_PID" 2>/dev/null || true
  fi
  NSPAWN_PID=
  PID1=
  if [ -n "$W" ]; then
    mountpoint -q "$W/root" && umount -l "$W/root"
    rm -rf "$W"
  fi
  W=
}
teardown() {
  local rc=$?
  if [ "$rc" != 0 ] && [ -n "$PID1" ] && kill -0 "$NSPAWN_PID" 2>/dev/null; then
    echo "--- journal of receptord in the container (last 80 lines)"
    nsenter -t "$PID1" -a journalctl -u receptord --no-pager -n 80 2>/dev/null || true
  fi
  stop_container
  echo "test-systemd: $(( $(date +%s) - START )) s in all"
  exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT TERM

pass=0
fail=0
STAGE= # prefixes each check's name: which distribution it ran on
ok() { pass=$((pass + 1)); echo "ok: $STAGE$1"; }
bad() { fail=$((fail + 1)); echo "FAILED: $STAGE$1"; }
check() { # description, command... (run on the host)
  local what=$1; shift
  if "$@"; then ok "$what"; else bad "$what"; fi
}
die() { bad "$1"; echo "systemd checks: $pass passed, $fail failed"; exit 1; }
# A command inside the container, with a clean environment, bounded by `timeout`.
# Run in the background and waited for, so that SIGINT/SIGTERM tear down at once.
ct() { nsenter -t "$PID1" -a env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
  timeout 300 "$@" & wait $!; }
cin() { local what=$1; shift; if ct "$@"; then ok "$what"; else bad "$what"; fi; }
# Polls `cmd` every 0.5 s until it succeeds or `secs` pass.
wait_for() { # secs, command...
  local secs=$1; shift
  local end=$(( $(date +%s) + secs ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$end" ] || return 1
    sleep 0.5
  done
}
prop() { ct systemctl show -P "$1" receptord; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# --- Boot ---
# The container's init: nspawn's child once it has exec'd systemd (before that, the child
# is nspawn's own set-up process, whose namespaces are not the container's yet).
child_of_nspawn() { PID1=$(ps -o pid=,comm= --ppid "$NSPAWN_PID" | awk '$2 == "systemd" { print $1; exit }'); [ -n "$PID1" ]; }
booted() { state=$(ct systemctl is-system-running 2>/dev/null || true); [ "$state" = running ] || [ "$state" = degraded ]; }
boot() { # rootfs: boots it on a fresh overlay in $W; PID1 is its systemd
  W=$(mktemp -d /var/tmp/receptord-systemd.XXXXXX)
  mkdir -p "$W/upper" "$W/work" "$W/root"
  mount -t overlay overlay -o "lowerdir=$1,upperdir=$W/upper,workdir=$W/work" "$W/root"
  systemd-nspawn -q -D "$W/root" -b --register=no --keep-unit -M "rtest$$" --console=read-only \
    >"$W/console.log" 2>&1 </dev/null &
  NSPAWN_PID=$!
  wait_for 30 child_of_nspawn || die "systemd-nspawn started a container (console: $(tail -5 "$W/console.log"))"
  wait_for 90 booted || die "the container booted (systemctl is-system-running: $(ct systemctl is-system-running || true))"
  ok "the container booted with systemd as PID 1 (after $(( $(date +%s) - START )) s)"
}

rootfs=$("$REPO/scripts/systemd-test/rootfs.sh" bookworm) || die "the Debian 12 root filesystem was built (rootfs.sh bookworm)"
echo "rootfs: $rootfs (ready after $(( $(date +%s) - START )) s)"
boot "$rootfs"

# --- Install ---
cp "$deb" "$W/root/root/receptord.deb"
cin "apt installs the .deb" apt-get install -y -q /root/receptord.deb
cin "the unit is enabled" systemctl is-enabled -q receptord
cin "the unit is active (READY=1 received)" systemctl is-active -q receptord
cin "the receptor user exists" id receptor
check "/etc/receptor is 0750 root:receptor" test "$(ct stat -c '%a %U:%G' /etc/receptor)" = "750 root:receptor"
status_text() { prop StatusText | grep -q "links: 0, reachable nodes: .*, running jobs: 0"; }
check "STATUS= shows links and jobs" wait_for 15 status_text
check "the daemon runs as root (managed-host profile)" test "$(ct stat -c %U "/proc/$(prop MainPID)")" = root

# --- Configure: a listener, the ansible_runner worker; reload applies them ---
PORT=$(free_port)
PORT2=$(free_port)
PEER="receptor://127.0.0.1:$PORT"
config() { # extra TOML
  cat >"$W/root/etc/receptor.toml" <<TOML
[node]
id = "rtest"
data_dir = "/var/lib/receptor"
[[listeners]]
url = "receptor://127.0.0.1:$PORT"
[work.ansible_runner]
enabled = true
[[work.command]]
name = "sleeper"
program = "/bin/sleep"
args = ["600"]
$1
TOML
}
config ""
pid_before=$(prop MainPID)
cin "systemctl reload succeeds" systemctl reload receptord
listening() { ct receptor --receptor-peer "$PEER" ping rtest -c 1 --timeout 2s; }
check "reload started the new listener" wait_for 20 listening
config "[[listeners]]
url = \"receptor://127.0.0.1:$PORT2\"
[[peers]]
url = \"receptor://127.0.0.1:9\""
cin "reload (add a listener and a peer)" systemctl reload receptord
listening2() { ct receptor --receptor-peer "receptor://127.0.0.1:$PORT2" ping rtest -c 1 --timeout 2s; }
check "reload added the second listener" wait_for 20 listening2
journal_has() { ct journalctl -u receptord --no-pager -o cat | grep -qF "$1"; }
check "reload added the peer" wait_for 10 journal_has "reload: peer added"
config ""
cin "reload (remove them)" systemctl reload receptord
gone2() { ! listening2; }
check "reload removed the second listener" wait_for 20 gone2
check "reload removed the peer" wait_for 10 journal_has "reload: peer removed"
check "the first listener stayed up" listening
check "reload kept the daemon (same MainPID)" test "$(prop MainPID)" = "$pid_before"
workers() { ct receptor --receptor-peer "$PEER" status | grep -q ansible; }
check "reload registered the ansible-runner worker" wait_for 15 workers

# --- A become playbook that changes the host ---
mkdir -p "$W/pkg/DEBIAN" "$W/pkg/usr/share/rtest-hello"
printf 'Package: rtest-hello\nVersion: 1.0\nArchitecture: all\nMaintainer: test <t@localhost>\nDescription: installed by a receptord job\n' >"$W/pkg/DEBIAN/control"
echo hello >"$W/pkg/usr/share/rtest-hello/hello"
dpkg-deb -b "$W/pkg" "$W/root/root/rtest-hello.deb" >/dev/null
mkdir -p "$W/root/root/pb/project" "$W/root/root/pb/inventory"
echo "localhost ansible_connection=local ansible_python_interpreter=/usr/bin/python3" >"$W/root/root/pb/inventory/hosts"
cat >"$W/root/root/pb/project/become.yml" <<'YML'
- hosts: localhost
  gather_facts: false
  become: true
  tasks:
    - name: write a file under /etc
      ansible.builtin.copy:
        dest: /etc/rtest-managed.conf
        content: "managed by receptord {{ tag }}\n"
    - name: install a package
      ansible.builtin.apt:
        deb: /root/rtest-hello.deb
    - name: a service to restart
      ansible.builtin.copy:
        dest: /etc/systemd/system/rtest-demo.service
        content: |
          [Service]
          Type=oneshot
          RemainAfterExit=yes
          ExecStart=/bin/sh -c 'date +%%s%%N >> /run/rtest-demo.restarts'
    - name: restart the service
      ansible.builtin.systemd:
        name: rtest-demo
        daemon_reload: true
        state: restarted
YML
cin "receptor run --via-receptor runs the become playbook" \
  receptor run /root/pb -p become.yml --via-receptor rtest --receptor-peer "$PEER" --cmdline "-e tag=run"
check "the playbook wrote /etc" test "$(ct cat /etc/rtest-managed.conf)" = "managed by receptord run"
cin "the playbook installed a package" dpkg -s rtest-hello
cin "the playbook restarted a service" test -s /run/rtest-demo.restarts

SOCK=/proc/$PID1/root/run/receptor/receptor.sock
ctl() { timeout 120 "$VENV/bin/receptorctl" --socket "$SOCK" "$@"; }
ct ansible-runner transmit /root/pb -p become.yml --cmdline "-e tag=unit" >"$W/transmit.bin"
out=$(ctl work submit ansible-runner --node rtest -p "$W/transmit.bin" -f 2>&1 || true)
check "receptorctl work unit runs the become playbook" grep -q '"event": "playbook_on_stats"' <<<"$out"
check "the work unit's playbook changed /etc" test "$(ct cat /etc/rtest-managed.conf)" = "managed by receptord unit"
check "the service was restarted twice" test "$(ct sh -c "wc -l < /run/rtest-demo.restarts")" = 2

# --- A running ansible task survives systemctl restart and apt install --reinstall ---
cat >"$W/root/root/pb/project/long.yml" <<'YML'
- hosts: localhost
  gather_facts: false
  become: true
  tasks:
    - name: say it runs
      ansible.builtin.file:
        path: /run/rtest-long.started
        state: touch
    - name: a task ct flight across the restart and the upgrade
      ansible.builtin.wait_for:
        path: /run/rtest-long.go
        timeout: 240
    - name: a module after them
      ansible.builtin.copy:
        dest: /etc/rtest-long.done
        content: "done\n"
YML
ct ansible-runner transmit /root/pb -p long.yml >"$W/transmit-long.bin"
unit=$(ctl work submit ansible-runner --node rtest -p "$W/transmit-long.bin" | sed -n 's/^Unit ID: //p')
check "a long work unit started" test -n "$unit"
check "its first task ran" wait_for 60 ct test -e /run/rtest-long.started
pid_before=$(prop MainPID)
cin "systemctl restart" systemctl restart receptord
check "the daemon was restarted" test "$(prop MainPID)" != "$pid_before"
cin "apt install --reinstall (an upgrade)" apt-get install -y -q --reinstall /root/receptord.deb
cin "the service runs after the upgrade" systemctl is-active -q receptord
# A unit's StateName, from `receptorctl work list` (JSON keyed by unit ID).
state_of() { ctl work list 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin).get(sys.argv[1], {}).get("StateName", "none"))' "$1"; }
state() { state_of "$unit"; }
check "the unit still runs after restart and upgrade" test "$(state)" = Running
ct touch /run/rtest-long.go
succeeded() { [ "$(state)" = Succeeded ]; }
check "the unit completed successfully" wait_for 120 succeeded
check "its last task ran" ct test -e /etc/rtest-long.done
results=$(ctl work results "$unit" 2>&1 || true)
check "its results hold the play recap" grep -q '"failures": {}' <<<"$results"

# --- The watchdog stays quiet while idle (a 4 s watchdog for the test) ---
mkdir -p "$W/root/etc/systemd/system/receptord.service.d"
printf '[Service]\nWatchdogSec=4s\n' >"$W/root/etc/systemd/system/receptord.service.d/watchdog.conf"
ct systemctl daemon-reload
cin "restart with a 4 s watchdog" systemctl restart receptord
pid_before=$(prop MainPID)
restarts_before=$(prop NRestarts)
sleep 10
check "no watchdog timeout while idle for 10 s" test "$(prop MainPID)" = "$pid_before"
check "no restart while idle" test "$(prop NRestarts)" = "$restarts_before"
check "no watchdog message in the journal" sh -c "! nsenter -t $PID1 -a journalctl -u receptord --no-pager -o cat | grep -qi 'watchdog timeout'"
rm "$W/root/etc/systemd/system/receptord.service.d/watchdog.conf"

# --- The hop profile: unprivileged and sandboxed, still serving the mesh ---
ct cp /usr/share/receptord/systemd/hop.conf /etc/systemd/system/receptord.service.d/hop.conf
ct systemctl daemon-reload
cin "restart with the hop profile" systemctl restart receptord
check "the hop profile runs the daemon as receptor" test "$(ct stat -c %U "/proc/$(prop MainPID)")" = receptor
check "the hop profile node answers on its listener" wait_for 20 listening
cin "reload under the hop profile" systemctl reload receptord
check "the hop profile sets NoNewPrivileges" test "$(prop NoNewPrivileges)" = yes
no_become() { ! ct receptor run /root/pb -p become.yml --via-receptor rtest --receptor-peer "$PEER" -q --cmdline "-e tag=hop"; }
check "the hop profile refuses become (as the old unit did)" no_become
check "so /etc was not changed" test "$(ct cat /etc/rtest-managed.conf)" = "managed by receptord unit"
rm -r "$W/root/etc/systemd/system/receptord.service.d"
ct systemctl daemon-reload
cin "back to the managed-host profile" systemctl restart receptord

. "$REPO/scripts/systemd-test/operator-checks.sh" # journal, reload, socket, package scripts

# --- Stop, remove (running units stopped), purge (nothing left) ---
cin "systemctl stop" systemctl stop receptord
check "stopped cleanly" test "$(prop Result)" = success
cin "systemctl start" systemctl start receptord
sleeper=$(ctl work submit sleeper --node rtest -n | sed -n 's/^Unit ID: //p')
running() { [ "$(state_of "$sleeper")" = Running ]; }
check "a unit runs before removal" wait_for 30 running
cin "apt remove" apt-get remove -y -q receptord
operator_checks_after_remove
check "the service is stopped" sh -c "! nsenter -t $PID1 -a systemctl is-active -q receptord"
no_receptord() { ! ct sh -c 'for p in /proc/[0-9]*; do readlink $p/exe; done 2>/dev/null | grep -q receptord'; }
check "no receptord process is left (daemon and unit supervisors)" wait_for 10 no_receptord
no_sleep() { ! ct sh -c 'for p in /proc/[0-9]*; do readlink $p/exe; done 2>/dev/null | grep -qx /usr/bin/sleep'; }
check "the unit's job is stopped" no_sleep
cin "remove keeps the state" test -d /var/lib/receptor/units
cin "apt purge" apt-get purge -y -q receptord
for p in /var/lib/receptor /var/log/receptor /etc/receptor /etc/receptor.toml /run/receptor; do
  check "purge removed $p" sh -c "! nsenter -t $PID1 -a test -e $p"
done

# --- Install without systemd-sysusers (as ct container images) ---
ct userdel receptor
ct dpkg-divert --quiet --local --rename --divert /usr/bin/systemd-sysusers.hidden --add /usr/bin/systemd-sysusers
cin "apt installs the .deb without systemd-sysusers" apt-get install -y -q /root/receptord.deb
check "the package is fully configured" test "$(ct dpkg-query -W -f '${db:Status-Status}' receptord)" = installed
cin "the receptor user was created with useradd" id receptor
cin "the service runs" systemctl is-active -q receptord
ct dpkg-divert --quiet --local --rename --remove /usr/bin/systemd-sysusers
stop_container

# --- Debian 11 (glibc 2.31): the floor of the shipped binaries, proven ---
STAGE="Debian 11: "
rootfs=$("$REPO/scripts/systemd-test/rootfs.sh" bullseye) || die "the Debian 11 root filesystem was built (rootfs.sh bullseye)"
echo "rootfs: $rootfs (ready after $(( $(date +%s) - START )) s)"
boot "$rootfs"
. "$REPO/scripts/systemd-test/bullseye.sh"

echo "systemd checks: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
