#!/usr/bin/env bash
# Issue #4's throughput target, end to end: warm-cache reads of
# GET /v1/recommendations at 64 connections, then `redis-benchmark -t get -c 64`
# against the same Redis, and the ratio API / Redis.
#
# A private Redis on BENCH_REDIS_PORT (6380, nothing on disk) is preloaded with
# 50,000 warm users (a 100-item cached list and a 5-item history each) and a
# small synthetic model; recsys-serving runs in release mode with every user in
# the treatment arm, impressions to an unreachable broker (counted as dropped;
# BENCH_BROKERS=127.0.0.1:9092 sends them to the local broker instead).
#
#   serving/bench/warm_reads.sh [SECONDS (30)] [CONNECTIONS (64)] [RUNS (1)]
#
# Prints the load tool's summary per run, RSS of recsys-serving after each run,
# then the Redis figure and the ratio of the best run. Leaves nothing running.
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-30}
conns=${2:-64}
runs=${3:-1}
port=${BENCH_REDIS_PORT:-6380}
api_port=${BENCH_API_PORT:-18080}
brokers=${BENCH_BROKERS:-127.0.0.1:1}
dir=$(mktemp -d /tmp/recsys-bench.XXXXXX)
bin=target/release

cleanup() {
    [ -n "${serving_pid:-}" ] && kill "$serving_pid" 2>/dev/null && wait "$serving_pid" 2>/dev/null
    redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT

cargo build --release --locked -q -p serving --bins
redis-server --daemonize yes --port "$port" --save '' --appendonly no --dir "$dir" >/dev/null
for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
"$bin/recsys-loadtest" preload --redis-url "redis://127.0.0.1:$port" --prefix bench: \
    --users 50000 --items 100 --model bench-v1 --model-dir "$dir/models" >/dev/null

RECSYS__REDIS__URL=redis://127.0.0.1:$port RECSYS__REDIS__PREFIX=bench: \
RECSYS__MODEL__ARTIFACTS_DIR=$dir/models \
RECSYS__KAFKA__BROKERS=$brokers RECSYS__KAFKA__TOPIC_PREFIX=bench. \
RECSYS__SERVING__LISTEN=127.0.0.1:$api_port RECSYS__SERVING__TREATMENT_PERCENT=100 \
RUST_LOG=warn "$bin/recsys-serving" >"$dir/serving.log" 2>&1 &
serving_pid=$!
for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$api_port/ready" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fsS "http://127.0.0.1:$api_port/ready" >/dev/null || { cat "$dir/serving.log"; exit 1; }

best=0
for r in $(seq "$runs"); do
    echo "== run $r: $conns connections, $secs s after a 3 s warm-up" >&2
    "$bin/recsys-loadtest" run --url "http://127.0.0.1:$api_port" -c "$conns" -d "$secs" --warmup 3 \
        --warm-users 50000 --cold-share 0 --json "$dir/run.json"
    rps=$(grep -o '"requests_per_s": *[0-9.]*' "$dir/run.json" | grep -o '[0-9.]*$')
    awk -v a="$rps" -v b="$best" 'BEGIN { exit !(a > b) }' && best=$rps
    echo "RSS recsys-serving: $(($(ps -o rss= -p "$serving_pid") / 1024)) MB" >&2
done
redis=$(redis-benchmark -p "$port" -t get -c 64 -n 200000 -q | grep -o '[0-9.]* requests per second' | grep -o '^[0-9.]*')
echo "redis-benchmark GET, 64 connections: $redis requests/s"
printf 'best API run: %.0f requests/s; API / Redis = %.2f (goal >= 0.4)\n' "$best" "$(echo "$best / $redis" | bc -l)"
