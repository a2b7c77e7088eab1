#!/usr/bin/env bash
# Starts the local services recsys needs, installing what is missing:
#   - Redis on 127.0.0.1:6379 (Debian's redis-server; nothing kept on disk)
#   - tansu, an Apache-Kafka-compatible broker, on 127.0.0.1:9092 with its
#     sqlite storage engine (see ../shared/KAFKA.md for why sqlite)
# Idempotent: a service already answering is left alone. State and logs live in
# .dev/ (gitignored). `scripts/dev-down.sh` stops what this script started.
set -euo pipefail
cd "$(dirname "$0")/.."

REDIS_PORT=${REDIS_PORT:-6379}
KAFKA_PORT=${KAFKA_PORT:-9092}
TANSU_VERSION=${TANSU_VERSION:-0.6.0}
state=.dev
mkdir -p "$state"

log() { printf '==> %s\n' "$*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
    local port=$1 name=$2
    for _ in $(seq 100); do
        port_open "$port" && return 0
        sleep 0.1
    done
    echo "$name did not start on port $port; see $state/" >&2
    exit 1
}

if redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1; then
    log "redis already answering on $REDIS_PORT"
else
    if ! command -v redis-server >/dev/null 2>&1; then
        log "installing redis-server (apt)"
        apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
    fi
    log "starting redis on 127.0.0.1:$REDIS_PORT"
    redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
        --pidfile "$PWD/$state/redis.pid" --logfile "$PWD/$state/redis.log"
    touch "$state/redis.started-by-dev-up"
    wait_port "$REDIS_PORT" redis
fi

tansu=${TANSU:-$HOME/.cargo/bin/tansu}
if port_open "$KAFKA_PORT"; then
    log "a broker already answers on $KAFKA_PORT"
else
    if [ ! -x "$tansu" ]; then
        log "installing tansu $TANSU_VERSION (cargo install, ~20 min on 2 cores, once)"
        cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore,libsql >&2
    fi
    log "starting tansu (sqlite engine) on 127.0.0.1:$KAFKA_PORT"
    (
        cd "$state"
        nohup "$tansu" broker \
            --storage-engine "sqlite://tansu.db" \
            --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
            --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
            >tansu.log 2>&1 &
        echo $! >tansu.pid
    )
    wait_port "$KAFKA_PORT" tansu
fi
log "redis 127.0.0.1:$REDIS_PORT, kafka 127.0.0.1:$KAFKA_PORT ready"
