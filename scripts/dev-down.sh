#!/usr/bin/env bash
# Stops what scripts/dev-up.sh started (and only that). `--wipe` also deletes the
# broker's sqlite data in .dev/. The Redis Cluster of `dev-up.sh --cluster` is
# stopped too; `--cluster` stops only the cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
state=.dev

only_cluster=0
wipe=0
for arg in "$@"; do
    case "$arg" in
        --cluster) only_cluster=1 ;;
        --wipe) wipe=1 ;;
        *) echo "usage: $0 [--cluster] [--wipe]" >&2; exit 2 ;;
    esac
done

stop_pid() {
    local file=$1 name=$2
    [ -f "$file" ] || return 0
    local pid
    pid=$(cat "$file")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
        printf '==> stopped %s (pid %s)\n' "$name" "$pid" >&2
    fi
    rm -f "$file"
}

if [ -f "$state/cluster/started-by-dev-up" ]; then
    for pidfile in "$state"/cluster/*/redis.pid; do
        [ -f "$pidfile" ] || continue
        stop_pid "$pidfile" "redis cluster node $(basename "$(dirname "$pidfile")")"
    done
    rm -f "$state/cluster/started-by-dev-up"
fi
[ "$only_cluster" = 1 ] && exit 0

stop_pid "$state/tansu.pid" tansu
if [ -f "$state/redis.started-by-dev-up" ]; then
    stop_pid "$state/redis.pid" redis
    rm -f "$state/redis.started-by-dev-up"
fi
if [ "$wipe" = 1 ]; then
    rm -f "$state"/tansu.db*
    printf '==> wiped broker data\n' >&2
fi
