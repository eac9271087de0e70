#!/usr/bin/env bash
# One command for the side-by-side benchmark: installs what is missing (beanstalkd,
# rabbitmq-server, liblmdb-dev, zlib1g-dev), builds tortoised and the load generator in release mode,
# starts each broker on 127.0.0.1 with its data in a fresh directory, runs the matrix
# (3 runs, median per cell), stops each broker by its PID and prints one table.
#   bash Benchmarks/compare.sh [extra tortoise-bench compare flags]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

need=()
command -v beanstalkd >/dev/null || need+=(beanstalkd)
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || need+=(rabbitmq-server)
source "$root/Benchmarks/brokers.sh"
install_and_build "${need[@]}"

work=$(mktemp -d /tmp/tortoise-compare-XXXXXX)
trap 'stop_started; rm -rf "$work"' EXIT

tport=$(free_port); bport=$(free_port); rport=$(free_port); eport=$(free_port); dport=$(free_port)

# TortoiseMQ: fsync before every OK (group commit).
"$root/.build/release/tortoised" --data "$work/tortoise" --port "$tport" >"$work/tortoised.out" 2>"$work/tortoised.err" &
pids+=($!)

# beanstalkd: binlog with -f 0, so every write is fsynced before the reply.
mkdir -p "$work/beanstalkd"
beanstalkd -l 127.0.0.1 -p "$bport" -b "$work/beanstalkd" -f 0 >"$work/beanstalkd.log" 2>&1 &
pids+=($!)

# RabbitMQ: its own epmd and node, all state in $work/rabbit.
start_rabbit "$work/rabbit" "$rport" "$eport" "$dport" tortoisebench
wait_port "$tport"; wait_port "$bport"

echo "versions: tortoised $(git -C "$root" rev-parse --short HEAD), $(beanstalkd -v 2>&1 | head -1), rabbitmq-server $(dpkg-query -W -f='${Version}' rabbitmq-server)"
"$root/Benchmarks/.build/release/tortoise-bench" compare \
    --tortoise-port "$tport" --beanstalk-port "$bport" --rabbit-port "$rport" "$@"
echo
echo "The ceiling for one prefetch-1 worker on this machine (no broker in between):"
"$root/Benchmarks/.build/release/tortoise-bench" roundtrip
