#!/usr/bin/env bash
# RabbitMQ's side of the scale figures (TortoiseMQ's: tortoise-bench scale): memory with
# 1,010,000 waiting persistent messages, time from start to accepting AMQP connections
# with them on disk, memory after they drain, and 1,000 queues with 2,000 consumer
# connections. Starts its own epmd and node on 127.0.0.1 with data in a fresh directory,
# stops them by PID. About 5 minutes.
#   bash Benchmarks/scale-rabbit.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
if [ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
fi
swift build -c release --package-path Benchmarks 2>&1 | tail -1
bench="$root/Benchmarks/.build/release/tortoise-bench"

work=$(mktemp -d /tmp/tortoise-rabbit-scale-XXXXXX)
pids=()
stop_all() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for _ in $(seq 1 300); do
        alive=0
        for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && break
        sleep 0.1
    done
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    pids=()
}
trap 'stop_all; rm -rf "$work"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
rport=$(free_port); eport=$(free_port); dport=$(free_port)
r="$work/rabbit"; mkdir -p "$r/mnesia" "$r/log"
echo "loopback_users = none" >"$r/rabbitmq.conf"
echo "[]." >"$r/enabled_plugins"

# Starts the node; sets beam to the Erlang VM's PID once AMQP answers.
start_rabbit() {
    epmd -port "$eport" -address 127.0.0.1 >"$r/epmd.log" 2>&1 &
    pids+=($!)
    (
        export HOME="$r" RABBITMQ_MNESIA_BASE="$r/mnesia" RABBITMQ_LOG_BASE="$r/log" RABBITMQ_NODE_PORT="$rport" \
            ERL_EPMD_PORT="$eport" RABBITMQ_NODENAME="tortoisescale@localhost" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
            RABBITMQ_DIST_PORT="$dport" RABBITMQ_CONFIG_FILE="$r/rabbitmq" RABBITMQ_ENABLED_PLUGINS_FILE="$r/enabled_plugins"
        exec /usr/lib/rabbitmq/bin/rabbitmq-server >>"$r/out.log" 2>&1
    ) &
    local script=$!
    pids+=($script)
    # An AMQP protocol header answered with connection.start means the node serves.
    python3 - "$rport" <<'PY'
import socket, sys, time
port = int(sys.argv[1])
for _ in range(6000):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=1)
        s.sendall(b"AMQP\x00\x00\x09\x01")
        if len(s.recv(7)) == 7:
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.05)
sys.exit("RabbitMQ did not start")
PY
    beam=$(pgrep -P "$script" | head -1)
    pids+=($beam)
}

echo "rabbitmq-server $(dpkg-query -W -f='${Version}' rabbitmq-server)"
start_rabbit
"$bench" rabbit-scale --phase seed --port "$rport" --pid "$beam"
stop_all
t0=$(date +%s.%N)
start_rabbit
t1=$(date +%s.%N)
echo "RabbitMQ: start-up with them on disk: accepting AMQP connections after $(python3 -c "print(f'{$t1-$t0:.2f}')") s"
"$bench" rabbit-scale --phase drain --port "$rport" --pid "$beam"
