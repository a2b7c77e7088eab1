#!/usr/bin/env bash
# One Redis node against a three-master Redis Cluster, same machine, same run:
#
#   1. warm reads: BENCH_USERS warm users (a cached list of 100 items and a
#      short history each) preloaded into each (recsys-loadtest preload), one
#      recsys-serving per mode, then recsys-loadtest unpaced (-c BENCH_CONN,
#      BENCH_SECONDS, warm users only); rounds alternate the modes;
#   2. updater refreshes: `updater/examples/bench_cluster.rs` (a backlog
#      consumed as fast as it goes, alternating modes).
#
# Prints every run, the medians and the cluster / single ratios.
#
#   bench/cluster_vs_single.sh
#   BENCH_ROUNDS=3 BENCH_SECONDS=20 bench/cluster_vs_single.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${BENCH_ROUNDS:-2}
SECONDS_PER_RUN=${BENCH_SECONDS:-15}
USERS=${BENCH_USERS:-100000}
CONN=${BENCH_CONN:-32}
EVENTS=${BENCH_EVENTS:-30000}
CLUSTER_PORT=${CLUSTER_PORT:-7000}
PORT=${BENCH_SERVING_PORT:-8190}
out=bench/out/cluster
bin=target/release
mkdir -p "$out"

scripts/dev-up.sh --cluster
cargo build --release --locked -q --bin recsys-serving --bin recsys-loadtest
cargo build --release --locked -q -p updater --example bench_cluster

nodes="redis://127.0.0.1:$CLUSTER_PORT,redis://127.0.0.1:$((CLUSTER_PORT + 1)),redis://127.0.0.1:$((CLUSTER_PORT + 2))"
run=$(date +%s)
serving=""
cleanup() {
    [ -n "$serving" ] && kill "$serving" 2>/dev/null || true
}
trap cleanup EXIT

redis_args() {
    case $1 in
        single) echo "--redis-url redis://127.0.0.1:6379" ;;
        cluster) echo "--cluster-nodes $nodes" ;;
    esac
}

# The lists' model, written once under the artifacts root both servings read.
model_dir=(--model-dir "$out/models-$run")
for mode in single cluster; do
    prefix="benchc-$run-$mode:"
    # shellcheck disable=SC2046
    "$bin/recsys-loadtest" preload $(redis_args "$mode") --prefix "$prefix" --users "$USERS" \
        --model "bench-$run" "${model_dir[@]}"
    model_dir=()
done

declare -A rps p50 p99
for round in $(seq "$ROUNDS"); do
    for mode in single cluster; do
        prefix="benchc-$run-$mode:"
        if [ "$mode" = single ]; then
            export RECSYS__REDIS__URL=redis://127.0.0.1:6379 RECSYS__REDIS__CLUSTER_NODES=""
        else
            export RECSYS__REDIS__URL="" RECSYS__REDIS__CLUSTER_NODES=$nodes
        fi
        RECSYS__REDIS__PREFIX=$prefix RECSYS__MODEL__ARTIFACTS_DIR=$out/models-$run \
            RECSYS__SERVING__LISTEN=127.0.0.1:$PORT RECSYS__KAFKA__TOPIC_PREFIX="benchc-$run." RUST_LOG=warn \
            "$bin/recsys-serving" >"$out/serving-$mode.log" 2>&1 &
        serving=$!
        for _ in $(seq 150); do curl -fsS "http://127.0.0.1:$PORT/ready" >/dev/null 2>&1 && break; sleep 0.2; done
        json=$out/reads-$mode-$round.json
        "$bin/recsys-loadtest" run --url "http://127.0.0.1:$PORT" -c "$CONN" -d "$SECONDS_PER_RUN" --warmup 2 \
            --warm-users "$USERS" --user-prefix lt-u --cold-share 0 --event-share 0 --json "$json" >/dev/null
        kill "$serving"
        wait "$serving" 2>/dev/null || true
        serving=""
        r=$(grep -o '"requests_per_s": *[0-9.]*' "$json" | grep -o '[0-9.]*$')
        e=$(grep -o '"errors": *[0-9]*' "$json" | grep -o '[0-9]*$')
        l50=$(python3 -c "import json,sys; print(json.load(open('$json'))['service_ms']['p50_ms'])")
        l99=$(python3 -c "import json,sys; print(json.load(open('$json'))['service_ms']['p99_ms'])")
        printf 'reads round %d %-7s %8.0f requests/s  p50 %6.2f ms  p99 %6.2f ms  errors %s\n' "$round" "$mode" "$r" "$l50" "$l99" "$e"
        [ "$e" = 0 ] || { echo "reads against $mode failed: $e errors (see $out/serving-$mode.log)" >&2; exit 1; }
        rps[$mode]="${rps[$mode]:-} $r"
        p50[$mode]="${p50[$mode]:-} $l50"
        p99[$mode]="${p99[$mode]:-} $l99"
    done
done
median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
single_rps=$(median <<<"${rps[single]}")
cluster_rps=$(median <<<"${rps[cluster]}")
printf 'reads, median of %d: single %.0f requests/s (p99 %s ms), cluster %.0f requests/s (p99 %s ms): cluster / single %.2f\n' \
    "$ROUNDS" "$single_rps" "$(median <<<"${p99[single]}")" "$cluster_rps" "$(median <<<"${p99[cluster]}")" \
    "$(echo "$cluster_rps / $single_rps" | bc -l)"

for mode in single cluster; do
    prefix="benchc-$run-$mode:"
    if [ "$mode" = single ]; then
        redis-cli --scan --pattern "${prefix}*" | xargs -r -n 500 redis-cli unlink >/dev/null
    else
        # One key per UNLINK (keys of several slots), pipelined to the node holding them.
        for p in $(seq "$CLUSTER_PORT" $((CLUSTER_PORT + 5))); do
            redis-cli -p "$p" --scan --pattern "${prefix}*" | sed 's/^/UNLINK /' | redis-cli -p "$p" >/dev/null 2>&1 || true
        done
    fi
done
rm -rf "$out/models-$run"

echo "updater refreshes ($EVENTS events per run, $ROUNDS rounds):"
target/release/examples/bench_cluster "$EVENTS" "$ROUNDS"
