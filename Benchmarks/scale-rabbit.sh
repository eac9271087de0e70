#!/usr/bin/env bash
# RabbitMQ's side of the scale figures (TortoiseMQ's: tortoise-bench scale): memory with
# 1,010,000 waiting persistent messages, time from start to accepting AMQP connections
# with them on disk, memory after they drain, and 1,000 queues with 2,000 consumer
# connections. Starts its own epmd and node on 127.0.0.1 with data in a fresh directory,
# stops them by PID. About 5 minutes.
#   bash Benchmarks/scale-rabbit.sh [--messages N --queues N --workers N]
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
source "$root/Benchmarks/brokers.sh"
trap 'stop_started; rm -rf "$work"' EXIT
rport=$(free_port); eport=$(free_port); dport=$(free_port)

echo "rabbitmq-server $(dpkg-query -W -f='${Version}' rabbitmq-server)"
start_rabbit "$work/rabbit" "$rport" "$eport" "$dport" tortoisescale
"$bench" rabbit-scale --phase seed --port "$rport" --pid "$beam" "$@"
stop_started
t0=$(date +%s.%N)
start_rabbit "$work/rabbit" "$rport" "$eport" "$dport" tortoisescale
t1=$(date +%s.%N)
echo "RabbitMQ: start-up with them on disk: accepting AMQP connections after $(python3 -c "print(f'{$t1-$t0:.2f}')") s"
"$bench" rabbit-scale --phase drain --port "$rport" --pid "$beam" "$@"
