# Sourced by scripts/systemd-test/run.sh (its helpers: ct, cin, check, wait_for, prop,
# config, ctl, state_of; its variables: W, PID1, PEER, VENV), with the managed-host
# service running: what an operator sees in the journal, on reload and restart, through
# the local control socket, and on `apt remove` next to a receptord that is not the
# service's. `operator_checks_after_remove` runs right after `apt remove`.

# --- Fatal errors: one err entry, whole path; a config error ends the restart loop ---
cp "$W/root/etc/receptor.toml" "$W/good.toml"
sed 's|^data_dir = .*|data_dir = 17|' "$W/good.toml" >"$W/root/etc/receptor.toml"
check_status_78() { ct receptord --check-config --config /etc/receptor.toml >/dev/null 2>&1; [ $? = 78 ]; }
check "--check-config refuses data_dir = 17 (exit 78)" check_status_78
pid_before=$(prop MainPID)
check "systemctl reload fails on a refused config" sh -c "! nsenter -t $PID1 -a timeout 120 systemctl reload receptord"
check "the refused reload kept the daemon" test "$(prop MainPID)" = "$pid_before"
since=$(ct date '+%Y-%m-%d %H:%M:%S')
n0=$(prop NRestarts)
sleep 1
ct systemctl restart receptord || true
sleep 6 # RestartSec=2s: a restart loop would have started the daemon twice by now
check "a config error stops the restart loop (failed, status 78)" \
  test "$(prop ActiveState) $(prop ExecMainStatus)" = "failed 78"
check "no automatic restart after it" test "$(prop NRestarts)" -le "$n0"
errs=$(ct journalctl -u receptord --no-pager -o cat -p err --since "$since" | grep -c 'invalid configuration' || true)
check "the config error is one err-priority journal entry ($errs)" test "$errs" = 1
check "it names the whole path, line, column and key" sh -c "nsenter -t $PID1 -a journalctl -u receptord --no-pager -o cat -p err --since '$since' | grep -qF 'invalid configuration: /etc/receptor.toml:3:12: key \`node.data_dir\`: '"
cp "$W/good.toml" "$W/root/etc/receptor.toml"
ct systemctl reset-failed receptord || true
cin "the fixed config starts" systemctl restart receptord

# --- systemctl reload returns once the reload is applied ---
reloads_recorded() { # every reload's outcome is on record when systemctl returns
  local i n before after
  for i in 1 2 3 4 5 6 7 8 9 10; do
    before=$(ct cat /run/receptor/reload 2>/dev/null || echo "0 0 none")
    ct systemctl reload receptord || return 1
    after=$(ct cat /run/receptor/reload)
    n=$(awk '{print $2}' <<<"$before")
    [ "$(awk '{print $2, $3}' <<<"$after")" = "$((n + 1)) applied" ] || return 1
  done
}
pid_now=$(prop MainPID)
ct sh -c "test \"\$(cut -d' ' -f1 /run/receptor/reload 2>/dev/null)\" = $pid_now" || ct systemctl reload receptord || true
check "10 x systemctl reload: each returned with its reload applied" reloads_recorded

# --- The local control socket: status, ping, traceroute without a peer ---
check "receptor status uses the local socket" sh -c "nsenter -t $PID1 -a receptor status --json | grep -q '\"node_id\": \"rtest\"'"
cin "receptor ping uses the local socket" receptor ping rtest -c 1
cin "receptor traceroute uses the local socket" receptor traceroute rtest
check "RECEPTOR_SOCKET is honoured" sh -c "! nsenter -t $PID1 -a env RECEPTOR_SOCKET=/nonexistent receptor status >/dev/null 2>&1"

# --- A restart with a unit running and a client following it ---
follow_unit=$(ctl work submit sleeper --node rtest -n | sed -n 's/^Unit ID: //p' || true)
follow_running() { [ "$(state_of "$follow_unit")" = Running ]; }
check "a unit runs to be followed" wait_for 30 follow_running
unit_scoped() { ct systemctl is-active --quiet "receptord-unit-$follow_unit.scope"; }
check "the unit runs in its own scope (receptord-unit-ID.scope)" unit_scoped
check "none of its processes is in the service's cgroup" sh -c "! nsenter -t $PID1 -a systemd-cgls --no-pager -u receptord.service | grep -q -- --supervise-unit"
ct receptor work results "$follow_unit" >/dev/null 2>&1 &
follower=$!
sleep 1
since=$(ct date '+%Y-%m-%d %H:%M:%S')
t0=$(date +%s%N)
cin "systemctl restart while a client follows a unit" systemctl restart receptord
t1=$(date +%s%N)
echo "info: restart with a follower took $(( (t1 - t0) / 1000000 )) ms"
check "the stop did not wait for the follower" sh -c "! nsenter -t $PID1 -a journalctl -u receptord --no-pager -o cat --since '$since' | grep -q 'tasks still running after shutdown grace'"
lines=$(ct journalctl -u receptord --no-pager -o cat --since "$since" | grep -c 'left-over process\|remains running after unit stopped' || true)
check "systemd logged no left-over process on that restart ($lines lines)" test "$lines" = 0
kill "$follower" 2>/dev/null || true
wait "$follower" 2>/dev/null || true
ctl work cancel "$follow_unit" >/dev/null 2>&1 || true

# --- The hop profile's systemd-analyze security score, running ---
mkdir -p "$W/root/etc/systemd/system/receptord.service.d"
ct cp /usr/share/receptord/systemd/hop.conf /etc/systemd/system/receptord.service.d/hop.conf
ct systemctl daemon-reload
cin "restart with the hop profile (score)" systemctl restart receptord
score=$(ct systemd-analyze security receptord --no-pager 2>/dev/null | sed -n 's/.*exposure level for receptord.service: \([0-9.]*\).*/\1/p' || true)
echo "info: systemd-analyze security, hop profile running: $score"
check "the running hop profile scores as docs/systemd.md says (1.5)" test "$score" = 1.5
rm -r "$W/root/etc/systemd/system/receptord.service.d"
ct systemctl daemon-reload
cin "back to the managed-host profile (score)" systemctl restart receptord

# --- A receptord that is not the service's, with a unit of its own ---
cat >"$W/root/root/hand.toml" <<'TOML'
[node]
id = "hand"
data_dir = "/root/hand-data"
[control]
socket = "/root/hand.sock"
[[work.command]]
name = "handsleep"
program = "/bin/sleep"
args = ["601"]
TOML
ct sh -c 'setsid /usr/bin/receptord --config /root/hand.toml </dev/null >/root/hand.log 2>&1 & echo $! >/root/hand.pid'
hand_sock() { [ -S "/proc/$PID1/root/root/hand.sock" ]; }
check "a hand-started receptord runs" wait_for 20 hand_sock
hand_unit=$(timeout 60 "$VENV/bin/receptorctl" --socket "/proc/$PID1/root/root/hand.sock" work submit handsleep --node hand -n | sed -n 's/^Unit ID: //p' || true)
hand_running() {
  [ "$(timeout 30 "$VENV/bin/receptorctl" --socket "/proc/$PID1/root/root/hand.sock" work list 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin).get(sys.argv[1], {}).get("StateName", "none"))' "$hand_unit")" = Running ]
}
# A process in the container whose command line starts with $1 (no pgrep/kill binaries in
# the minimal image: the shell's kill, and /proc).
has_proc() { ct sh -c "for p in /proc/[0-9]*; do tr '\\0' ' ' <\$p/cmdline 2>/dev/null | grep -q '^$1' && exit 0; done; exit 1"; }
check "the hand-started daemon runs a unit" wait_for 30 hand_running

operator_checks_after_remove() {
  local hand_pid
  hand_pid=$(ct cat /root/hand.pid)
  check "apt remove left the hand-started receptord running" ct sh -c "kill -0 $hand_pid"
  check "and its unit's job" has_proc '/bin/sleep 601'
  timeout 60 "$VENV/bin/receptorctl" --socket "/proc/$PID1/root/root/hand.sock" work cancel "$hand_unit" >/dev/null 2>&1 || true
  ct sh -c "kill -TERM $hand_pid" || true
  hand_gone() { ! ct sh -c "kill -0 $hand_pid" 2>/dev/null && ! has_proc '/bin/sleep 601'; }
  check "the hand-started daemon and its unit stopped for the next checks" wait_for 30 hand_gone
}
