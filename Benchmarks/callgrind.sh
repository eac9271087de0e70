#!/usr/bin/env bash
# Instructions per task: runs tortoised under valgrind's callgrind and counts what its
# threads execute while 10,000 tasks are put, delivered and acknowledged (the `consume`
# workload of `tortoise-bench compare`: twice a prefill of 5,000, then 1 and 8 workers).
# Unlike the timings of compare.sh, the count barely moves with the load on the machine,
# so two builds can be told apart by a few per cent. It counts user-space instructions
# only: the kernel's share (fdatasync, socket calls, wake-ups) is not in it.
#   bash Benchmarks/callgrind.sh [tortoised binary ...]   (default: a release build of this tree)
# Several binaries (say, a build of main and one of a branch) run one after the other
# with the same workload. PREFILL=n changes the prefill; KEEP=DIR keeps the profiles
# there (callgrind_annotate --tree=calling DIR/profile-1.1 shows who calls what).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

source "$root/Benchmarks/brokers.sh"
need=()
command -v valgrind >/dev/null || need+=(valgrind)
install_and_build "${need[@]}"

work=$(mktemp -d /tmp/tortoise-callgrind-XXXXXX)
trap 'stop_started; rm -rf "$work"' EXIT

bins=("$@")
[ ${#bins[@]} -gt 0 ] || bins=("$root/.build/release/tortoised")
prefill=${PREFILL:-5000}
tasks=$((2 * prefill))
n=0
for bin in "${bins[@]}"; do
    n=$((n + 1))
    # valgrind 3.19 cannot read the debug information Swift 6 writes: profile a copy
    # without it (the symbol table stays, so functions keep their names).
    objcopy --strip-debug "$bin" "$work/tortoised-$n"
    port=$(free_port)
    valgrind --tool=callgrind --callgrind-out-file="$work/profile-$n" \
        "$work/tortoised-$n" --data "$work/data-$n" --port "$port" >"$work/out-$n" 2>"$work/err-$n" &
    pid=$!
    pids+=("$pid")
    # Under valgrind the broker takes tens of seconds to start.
    for _ in $(seq 1 1800); do grep -q listening "$work/out-$n" && break; sleep 0.1; done
    grep -q listening "$work/out-$n" || { echo "$bin did not start under valgrind:" >&2; tail "$work/err-$n" >&2; exit 1; }
    callgrind_control -z "$pid" >/dev/null 2>&1
    "$root/Benchmarks/.build/release/tortoise-bench" compare --tortoise-port "$port" --only consume \
        --runs 1 --prefill "$prefill" --seconds 600 >/dev/null 2>&1
    callgrind_control -d "$pid" >/dev/null 2>&1
    stop_started
    profile="$work/profile-$n.1"
    if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP"; cp "$profile" "$KEEP/"; fi
    total=$(awk '/^summary:/ {print $2}' "$profile")
    inclusive=$(callgrind_annotate --inclusive=yes --threshold=100 "$profile" 2>/dev/null | swift demangle --simplified)
    loop=$(grep -m1 'closure #1 in closure #1 in static ThreadOpsPosix.run' <<<"$inclusive" | awk '{gsub(",", "", $1); print $1}')
    store=$(grep -m1 'NSThreadStart(_:)' <<<"$inclusive" | awk '{gsub(",", "", $1); print $1}')
    echo "== $bin"
    echo "instructions per task (put, delivery, ack; $tasks tasks): $((total / tasks)) in all;" \
        "event loop $((${loop:-0} / tasks)), store threads $((${store:-0} / tasks))"
    echo "most instructions of their own (self cost):"
    callgrind_annotate --threshold=100 "$profile" 2>/dev/null | swift demangle --simplified \
        | grep -E '^ *[0-9,]+ \( *[0-9.]+%\)  ' | grep -v -E 'PROGRAM TOTALS|clone|start_thread|ThreadOpsPosix|NSThreadStart|Thread.main|setupThreadAndEventLoop|NIOThread|TaskStore.init' \
        | head -15 | cut -c1-150 || true  # head closes the pipe early: not a failure
done
