# Shared by compare.sh and scale-rabbit.sh (sourced): ports, waiting for a broker, a
# RabbitMQ node of our own, and stopping exactly the processes we started.

# PIDs of everything started; stop_started stops them.
pids=()

# install_and_build [PACKAGE...]: installs the Debian packages given, then sets up and
# builds tortoised and tortoise-bench in release mode (from the repository's root).
install_and_build() {
    if [ $# -gt 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
    fi
    bash scripts/setup.sh
    swift build -c release --product tortoised 2>&1 | tail -1
    swift build -c release --package-path Benchmarks 2>&1 | tail -1
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

wait_port() {
    for _ in $(seq 1 300); do
        python3 -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1',$1)))" && return 0
        sleep 0.1
    done
    echo "nothing listens on $1" >&2; return 1
}

# A clean stop for each process started; what still runs after 30 s is killed.
stop_started() {
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

# start_rabbit DIR AMQP_PORT EPMD_PORT DIST_PORT NODENAME: its own epmd and node with all
# state in DIR; returns once AMQP answers (an AMQP header gets connection.start back).
# Sets beam to the Erlang VM's PID (a child of the start script).
start_rabbit() {
    local r=$1 rport=$2 eport=$3 dport=$4 node=$5
    mkdir -p "$r/mnesia" "$r/log"
    echo "[]." >"$r/enabled_plugins"
    echo "loopback_users = none" >"$r/rabbitmq.conf"
    epmd -port "$eport" -address 127.0.0.1 >>"$r/epmd.log" 2>&1 &
    pids+=($!)
    (
        export HOME="$r" RABBITMQ_MNESIA_BASE="$r/mnesia" RABBITMQ_LOG_BASE="$r/log" RABBITMQ_NODE_PORT="$rport" \
            ERL_EPMD_PORT="$eport" RABBITMQ_NODENAME="$node@localhost" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
            RABBITMQ_DIST_PORT="$dport" RABBITMQ_CONFIG_FILE="$r/rabbitmq" RABBITMQ_ENABLED_PLUGINS_FILE="$r/enabled_plugins"
        exec /usr/lib/rabbitmq/bin/rabbitmq-server >>"$r/out.log" 2>&1
    ) &
    local script=$!
    pids+=($script)
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
