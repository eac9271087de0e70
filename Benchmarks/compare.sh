#!/usr/bin/env bash
# One command for the side-by-side benchmark: installs what is missing (beanstalkd,
# rabbitmq-server, liblmdb-dev), builds tortoised and the load generator in release mode,
# starts each broker on 127.0.0.1 with its data in a fresh directory, runs the matrix
# (3 runs, median per cell), stops each broker by its PID and prints one table.
#   bash Benchmarks/compare.sh [extra tortoise-bench compare flags]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

need=()
command -v beanstalkd >/dev/null || need+=(beanstalkd)
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || need+=(rabbitmq-server)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
bash scripts/setup.sh
swift build -c release --product tortoised 2>&1 | tail -1
swift build -c release --package-path Benchmarks 2>&1 | tail -1

work=$(mktemp -d /tmp/tortoise-compare-XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    # Give each a clean stop; only what is still running after 15 s is killed.
    for _ in $(seq 1 150); do
        alive=0
        for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && break
        sleep 0.1
    done
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_port() {
    for _ in $(seq 1 300); do
        python3 -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1',$1)))" && return 0
        sleep 0.1
    done
    echo "nothing listens on $1" >&2; return 1
}

tport=$(free_port); bport=$(free_port); rport=$(free_port); eport=$(free_port); dport=$(free_port)

# TortoiseMQ: fsync before every OK (group commit).
"$root/.build/release/tortoised" --data "$work/tortoise" --port "$tport" >"$work/tortoised.out" 2>"$work/tortoised.err" &
pids+=($!)

# beanstalkd: binlog with -f 0, so every write is fsynced before the reply.
mkdir -p "$work/beanstalkd"
beanstalkd -l 127.0.0.1 -p "$bport" -b "$work/beanstalkd" -f 0 >"$work/beanstalkd.log" 2>&1 &
pids+=($!)

# RabbitMQ: its own epmd and node, all state in $work/rabbit.
r="$work/rabbit"; mkdir -p "$r/mnesia" "$r/log"
echo "[]." >"$r/enabled_plugins"
echo "loopback_users = none" >"$r/rabbitmq.conf"
epmd -port "$eport" -address 127.0.0.1 >"$r/epmd.log" 2>&1 &
pids+=($!)
sleep 0.5
(
    export HOME="$r" RABBITMQ_MNESIA_BASE="$r/mnesia" RABBITMQ_LOG_BASE="$r/log" RABBITMQ_NODE_PORT="$rport" \
        ERL_EPMD_PORT="$eport" RABBITMQ_NODENAME="tortoisebench@localhost" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
        RABBITMQ_DIST_PORT="$dport" RABBITMQ_CONFIG_FILE="$r/rabbitmq" RABBITMQ_ENABLED_PLUGINS_FILE="$r/enabled_plugins"
    exec /usr/lib/rabbitmq/bin/rabbitmq-server >"$r/out.log" 2>&1
) &
pids+=($!)

wait_port "$tport"; wait_port "$bport"; wait_port "$rport"
# The Erlang VM is a child of the start script: stop it by its PID too.
for p in $(pgrep -P "${pids[-1]}" || true); do pids+=("$p"); done

echo "versions: tortoised $(git -C "$root" rev-parse --short HEAD), $(beanstalkd -v 2>&1 | head -1), rabbitmq-server $(dpkg-query -W -f='${Version}' rabbitmq-server)"
"$root/Benchmarks/.build/release/tortoise-bench" compare \
    --tortoise-port "$tport" --beanstalk-port "$bport" --rabbit-port "$rport" "$@"
echo
echo "The ceiling for one prefetch-1 worker on this machine (no broker in between):"
"$root/Benchmarks/.build/release/tortoise-bench" roundtrip
