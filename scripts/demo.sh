#!/usr/bin/env bash
# `make demo`: a three-node mesh on 127.0.0.1 (node1 - node2 - node3), then the sample
# private data dir's playbook run on node3 by a client entering the mesh at node1.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
BIN="$ROOT/target/release"
WORK="$ROOT/.demo"
rm -rf "$WORK" && mkdir -p "$WORK"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# Starts node $1 (peering with port $2 if given, with ansible-runner on PATH if $3=yes);
# sets PORT to the port it listens on.
start_node() {
  local id=$1 peer=${2:-} ansible=${3:-no} cfg="$WORK/$1.toml"
  {
    printf '[node]\nid = "%s"\ndata_dir = "%s"\n' "$id" "$WORK/$id"
    printf '[[listeners]]\nurl = "receptor://127.0.0.1:0"\n'
    [ -n "$peer" ] && printf '[[peers]]\nurl = "receptor://127.0.0.1:%s"\n' "$peer"
  } > "$cfg"
  local path="$PATH"
  [ "$ansible" = yes ] && path="$VENV/bin:$PATH"
  PATH="$path" "$BIN/receptord" --config "$cfg" > /dev/null 2> "$WORK/$id.log" &
  pids+=($!)
  for _ in $(seq 100); do
    local port
    port=$(sed -n 's/.*listener bound.*addr=127\.0\.0\.1:\([0-9]*\).*/\1/p' "$WORK/$id.log" | head -n1)
    if [ -n "$port" ]; then PORT=$port; return; fi
    sleep 0.1
  done
  echo "node $id did not start; its log:" >&2; cat "$WORK/$id.log" >&2; exit 1
}

start_node node1; p1=$PORT
start_node node2 "$p1"; p2=$PORT
start_node node3 "$p2" yes
peer="receptor://127.0.0.1:$p1"
for _ in $(seq 100); do
  "$BIN/receptor" --receptor-peer "$peer" ping node3 -c 1 --timeout 1s > /dev/null 2>&1 && break
  sleep 0.1
done

echo "== mesh (as seen from node1) =="
"$BIN/receptor" --receptor-peer "$peer" status
cp -r "$ROOT/demo" "$WORK/pdd"
echo
echo "== receptor run $WORK/pdd -p test.yml --via-receptor node3 --receptor-peer $peer =="
rc=0
"$BIN/receptor" run "$WORK/pdd" -p test.yml -i demo --via-receptor node3 --receptor-peer "$peer" || rc=$?
echo
echo "rc=$rc; artifacts in $WORK/pdd/artifacts/demo: $(ls "$WORK/pdd/artifacts/demo" | tr '\n' ' ')"
exit "$rc"
