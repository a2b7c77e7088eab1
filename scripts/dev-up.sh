#!/usr/bin/env bash
# Starts the local services recsys needs, installing what is missing:
#   - Redis on 127.0.0.1:6379 (Debian's redis-server; nothing kept on disk)
#   - tansu, an Apache-Kafka-compatible broker, on 127.0.0.1:9092 with its
#     sqlite storage engine (see ../shared/KAFKA.md for why sqlite)
# Idempotent: a service already answering is left alone. State and logs live in
# .dev/ (gitignored). `scripts/dev-down.sh` stops what this script started.
#
# `--cluster` also starts a Redis Cluster of three masters and three replicas on
# 127.0.0.1:7000-7005 (CLUSTER_PORT=first port), created with
# `redis-cli --cluster create`; its state is .dev/cluster/<port>/ and nothing is
# kept on disk but each node's nodes.conf. A cluster already answering with
# cluster_state:ok is left alone. Point recsys at it with
# `[redis] cluster_nodes = ["redis://127.0.0.1:7000", ...]` (docs/operations.md).
set -euo pipefail
cd "$(dirname "$0")/.."

cluster=0
for arg in "$@"; do
    case "$arg" in
        --cluster) cluster=1 ;;
        *) echo "usage: $0 [--cluster]" >&2; exit 2 ;;
    esac
done

REDIS_PORT=${REDIS_PORT:-6379}
KAFKA_PORT=${KAFKA_PORT:-9092}
TANSU_VERSION=${TANSU_VERSION:-0.6.0}
CLUSTER_PORT=${CLUSTER_PORT:-7000}
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

need_redis_server() {
    if ! command -v redis-server >/dev/null 2>&1; then
        log "installing redis-server (apt)"
        apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
    fi
}

cluster_ports=$(seq "$CLUSTER_PORT" $((CLUSTER_PORT + 5)))
cluster_info() { redis-cli -h 127.0.0.1 -p "$CLUSTER_PORT" cluster info 2>/dev/null | tr -d '\r'; }
cluster_ok() { cluster_info | grep -qx 'cluster_state:ok'; }

start_cluster() {
    if cluster_ok; then
        log "redis cluster already ok on 127.0.0.1:$CLUSTER_PORT-$((CLUSTER_PORT + 5))"
        return 0
    fi
    need_redis_server
    cdir=$state/cluster
    mkdir -p "$cdir"
    touch "$cdir/started-by-dev-up"
    for port in $cluster_ports; do
        if redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1; then
            log "cluster node $port already answering"
            continue
        fi
        mkdir -p "$cdir/$port"
        rm -f "$cdir/$port/dump.rdb"
        # No RDB, no AOF, replicas sync over the socket (diskless load): only
        # nodes.conf (the node's view of the cluster) is written.
        redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
            --repl-diskless-sync yes --repl-diskless-load swapdb \
            --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 5000 \
            --dir "$PWD/$cdir/$port" --pidfile "$PWD/$cdir/$port/redis.pid" --logfile "$PWD/$cdir/$port/redis.log"
    done
    for port in $cluster_ports; do wait_port "$port" "redis cluster node"; done

    # Nodes restarted from their nodes.conf find each other again (empty, with their
    # slots); otherwise the cluster is created afresh.
    if ! cluster_info | grep -qx 'cluster_slots_assigned:16384'; then
        log "creating the redis cluster (3 masters, 3 replicas)"
        nodes=()
        for port in $cluster_ports; do
            # A node left over from a half-made cluster: empty it so create accepts it.
            redis-cli -h 127.0.0.1 -p "$port" flushall >/dev/null
            redis-cli -h 127.0.0.1 -p "$port" cluster reset hard >/dev/null
            nodes+=("127.0.0.1:$port")
        done
        redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >"$cdir/create.log" 2>&1 ||
            { cat "$cdir/create.log" >&2; exit 1; }
    fi
    for _ in $(seq 300); do
        cluster_ok && break
        sleep 0.1
    done
    cluster_ok || { echo "redis cluster not ok after 30 s:" >&2; cluster_info >&2; exit 1; }
    # Every node must agree, not just the first, and each master needs its
    # replica attached (create assigns them; gossip takes a moment) so a failover works.
    for port in $cluster_ports; do
        for _ in $(seq 300); do
            redis-cli -h 127.0.0.1 -p "$port" cluster info 2>/dev/null | tr -d '\r' | grep -qx 'cluster_state:ok' && break
            sleep 0.1
        done
    done
    for _ in $(seq 300); do
        [ "$(redis-cli -h 127.0.0.1 -p "$CLUSTER_PORT" cluster nodes | grep -c ' slave ')" -ge 3 ] && break
        sleep 0.1
    done
    log "redis cluster 127.0.0.1:$CLUSTER_PORT-$((CLUSTER_PORT + 5)) ready (cluster_state:ok)"
}

# The cluster first: it needs nothing else, and the broker may take long to install.
if [ "$cluster" = 1 ]; then start_cluster; fi

if redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1; then
    log "redis already answering on $REDIS_PORT"
else
    need_redis_server
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
        # postgres: the other storage engine docs/performance.md compares (the
        # broker's produce -> consume floor); sqlite stays the one started here.
        cargo install tansu --version "$TANSU_VERSION" --locked --features "${TANSU_FEATURES:-dynostore,libsql,postgres}" >&2
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

