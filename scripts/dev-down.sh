#!/usr/bin/env bash
# Stops what scripts/dev-up.sh started (and only that). `--wipe` also deletes the
# broker's sqlite data in .dev/.
set -euo pipefail
cd "$(dirname "$0")/.."
state=.dev

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

stop_pid "$state/tansu.pid" tansu
if [ -f "$state/redis.started-by-dev-up" ]; then
    stop_pid "$state/redis.pid" redis
    rm -f "$state/redis.started-by-dev-up"
fi
if [ "${1:-}" = "--wipe" ]; then
    rm -f "$state"/tansu.db*
    printf '==> wiped broker data\n' >&2
fi
