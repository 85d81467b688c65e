#!/usr/bin/env bash
# The node under a simulated Windows (.ci/windows-sim/sitecustomize.py: no fcntl, termios, pwd, grp,
# socket.AF_UNIX, signal.SIGHUP). Run from the top of the repository with the project's venv active:
#   bash .ci/windows-sim.sh
# It checks, printing each step: every module and public name imports; the demo exits 0; a node
# keeps a ledger, a second node on the same ledger is refused (exit 2, the clear error), and the
# first stops cleanly on SIGINT (what Ctrl+C is on Windows). Exits non-zero on the first failure.
set -euo pipefail
# Job control: without it bash starts background processes with SIGINT ignored, and Ctrl+C is what we send.
set -m
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/.ci/windows-sim${PYTHONPATH:+:$PYTHONPATH}"
work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
# The node must not pick up a developer's settings: only what this script passes.
for name in $(env | grep -o '^OCTOHUB_[A-Z_]*' || true); do unset "$name"; done

fail() { echo "windows-sim: FAIL: $*" >&2; exit 1; }
step() { echo "windows-sim: $*"; }
# wait_for FILE TEXT SECONDS: poll FILE until it contains TEXT.
wait_for() {
    local deadline=$((SECONDS + $3))
    until grep -q -- "$2" "$1" 2>/dev/null; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.1
    done
}
# wait_exit PID SECONDS: sets $code to the exit code of a background process; fails if it runs on.
wait_exit() {
    local deadline=$((SECONDS + $2))
    while kill -0 "$1" 2>/dev/null; do
        [ "$SECONDS" -lt "$deadline" ] || fail "process $1 still running after $2 s"
        sleep 0.1
    done
    code=0
    wait "$1" || code=$?
}

step "python $(python -c 'import sys; print(sys.version.split()[0])'), simulation: $PYTHONPATH"
step "1. every module and public name imports"
python .ci/windows-sim/check_imports.py || fail "an import failed (above)"

step "2. the demo: python run_node.py --demo"
python run_node.py --demo > "$work/demo.out" 2> "$work/demo.err" || { cat "$work/demo.err" >&2; fail "the demo exited $?"; }
grep -q "every task answered as expected" "$work/demo.out" || { cat "$work/demo.out" >&2; fail "the demo did not answer every task"; }

step "3. a node with a ledger; a second node on it is refused; the first stops cleanly"
key="windows-sim-$RANDOM$RANDOM"
python -m octohub_sync.hub --api-port 0 --ws-port 0 --key "$key" > "$work/hub.out" 2> "$work/hub.err" &
pids+=($!)
hub=$!
wait_for "$work/hub.out" "--server-port" 20 || { cat "$work/hub.err" >&2; fail "the local hub did not start"; }
port="$(grep -o -- '--server-port [0-9]*' "$work/hub.out" | head -1 | cut -d' ' -f2)"
node_args=(--env-file /dev/null --server-host 127.0.0.1 --server-port "$port" --pc-id node_windows_sim
           --state-dir "$work/state" --log-level INFO)
OCTOHUB_SIGNATURE_KEY="$key" python run_node.py "${node_args[@]}" 2> "$work/first.log" &
pids+=($!)
first=$!
wait_for "$work/first.log" "sent node_ready" 20 || { cat "$work/first.log" >&2; fail "the first node did not connect"; }
grep -q "created the ledger $work/state/node_windows_sim.sqlite3" "$work/first.log" \
    || { cat "$work/first.log" >&2; fail "no INFO line saying where the ledger was created"; }
step "   first node connected, its ledger in $work/state"
code=0
OCTOHUB_SIGNATURE_KEY="$key" timeout 30 python run_node.py "${node_args[@]}" 2> "$work/second.log" || code=$?
[ "$code" = 2 ] || { cat "$work/second.log" >&2; fail "the second node exited $code, not 2 (configuration error)"; }
grep -q "another node process with pc_id node_windows_sim" "$work/second.log" \
    || { cat "$work/second.log" >&2; fail "the second node's error does not say another process holds the ledger"; }
step "   second node refused: $(grep -o 'another node process.*' "$work/second.log" | head -1 | cut -c1-100)..."
kill -INT "$first"
wait_exit "$first" 30
[ "$code" = 0 ] || { cat "$work/first.log" >&2; fail "the first node exited $code after SIGINT, not 0"; }
grep -q "node stopped" "$work/first.log" || { cat "$work/first.log" >&2; fail "the first node did not stop cleanly"; }
step "   first node stopped cleanly on SIGINT (exit 0)"
kill -INT "$hub"
wait_exit "$hub" 20
[ "$code" = 0 ] || fail "the local hub exited $code after SIGINT"
step "ok: imports, demo, ledger (one process per ledger) under the simulated Windows"
