#!/usr/bin/env bash
# The soak of issue #7: the full pipeline under load for SOAK_SECONDS (600):
# scripts/demo.sh starts Redis, the broker, a trained model, ingest, the
# updater and serving; then, at the same time,
#   - recsys-loadtest reads recommendations at SOAK_RATE requests/s from 16
#     connections, 10 % cold users, and posts 5 % follow-up events to ingest;
#     by default SOAK_RATE is half the capacity measured first: the same mix,
#     unpaced, for SOAK_PROBE_SECONDS (20) against the same running pipeline;
#   - recsys-ingest replay feeds the event log into Kafka at SOAK_REPLAY_RATE;
#   - the updater folds everyone in.
# Every 30 s: RSS and live heap (recsys_heap_live_bytes: what the allocator's
# callers hold; RSS minus it is what the allocator retains) of each process and
# the updater's consumer lag. At the end: the load tool's summary (errors), RSS
# and live heap after 1 minute vs at the end (RSS must stay within ±10 %), the
# largest lag. Leaves the demo running (scripts/demo.sh stop).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TOTAL=${SOAK_SECONDS:-600}
PROBE_SECONDS=${SOAK_PROBE_SECONDS:-20}
REPLAY_RATE=${SOAK_REPLAY_RATE:-1000}
state=.demo
bin=target/release

scripts/demo.sh >/dev/null
# shellcheck disable=SC1091
source "$state/env"
cargo build --release --locked -q -p serving --bin recsys-loadtest
users=$(tail -n +2 "$state/data/events.csv" | cut -d, -f2 | sort -n | tail -1)
api=http://127.0.0.1:${DEMO_SERVING_PORT:-8080}
ingest=http://127.0.0.1:${DEMO_INGEST_PORT:-8081}
upd=http://127.0.0.1:${DEMO_UPDATER_PORT:-9102}

mix=(--warm-users "$users" --user-prefix "" --cold-share 0.1 --ingest-url "$ingest" --event-share 0.05)
if [ -n "${SOAK_RATE:-}" ]; then
    RATE=$SOAK_RATE
else
    echo "soak: measuring capacity (${PROBE_SECONDS} s, unpaced, same mix)" >&2
    "$bin/recsys-loadtest" run --url "$api" -c 16 -d "$PROBE_SECONDS" --warmup 2 "${mix[@]}" \
        --json "$state/soak-probe.json" >"$state/soak-probe.txt" 2>&1
    capacity=$(grep -o '"requests_per_s": *[0-9.]*' "$state/soak-probe.json" | grep -o '[0-9.]*$')
    RATE=$(echo "$capacity / 2" | bc)
    echo "capacity: $capacity requests/s; soaking at half: $RATE" | tee "$state/soak-capacity.txt"
fi
echo "soak: ${SECONDS_TOTAL} s at ${RATE} requests/s, replay at ${REPLAY_RATE} events/s" >&2
"$bin/recsys-loadtest" run --url "$api" -c 16 --rate "$RATE" -d "$SECONDS_TOTAL" --warmup 0 "${mix[@]}" \
    --json "$state/soak-load.json" >"$state/soak-load.txt" 2>&1 &
load=$!
"$bin/recsys-ingest" replay "$state/data/events.csv" --rate "$REPLAY_RATE" --quiet >"$state/soak-replay.txt" 2>&1 &
replay=$!

declare -A metrics_url=([ingest]="$ingest/metrics" [updater]="$upd/metrics" [serving]="$api/metrics")
rss() { ps -o rss= -p "$(cat "$state/$1.pid")" 2>/dev/null | tr -d ' ' || echo 0; }
# Live heap in KiB, like ps's RSS.
heap() { curl -fsS "${metrics_url[$1]}" | awk '/^recsys_heap_live_bytes / {printf "%d", $2 / 1024}'; }
lag() { curl -fsS "$upd/metrics" | awk '/^recsys_updater_consumer_lag\{/ {s += $2} END {print s + 0}'; }
mb() { echo "${1:-0}/1024" | bc -l; }
printf '%6s %9s %9s %9s %9s %9s %9s %8s\n' "t (s)" "ingest" "heap" "updater" "heap" "serving" "heap" "lag" |
    tee "$state/soak.txt"
printf '%6s %9s %9s %9s %9s %9s %9s %8s\n' "" "RSS MB" "live MB" "RSS MB" "live MB" "RSS MB" "live MB" "" |
    tee -a "$state/soak.txt"
max_lag=0
declare -A first first_heap
start=$(date +%s)
while kill -0 "$load" 2>/dev/null; do
    sleep 30
    t=$(($(date +%s) - start))
    l=$(lag)
    [ "$l" -gt "$max_lag" ] && max_lag=$l
    row=$(printf '%6d %9.1f %9.1f %9.1f %9.1f %9.1f %9.1f %8d' "$t" "$(mb "$(rss ingest)")" "$(mb "$(heap ingest)")" \
        "$(mb "$(rss updater)")" "$(mb "$(heap updater)")" "$(mb "$(rss serving)")" "$(mb "$(heap serving)")" "$l")
    echo "$row" | tee -a "$state/soak.txt"
    if [ -z "${first[serving]:-}" ] && [ "$t" -ge 60 ]; then
        for p in ingest updater serving; do
            first[$p]=$(rss "$p")
            first_heap[$p]=$(heap "$p")
        done
    fi
done
wait "$load" || true
kill "$replay" 2>/dev/null || true
cat "$state/soak-load.txt"
ok=1
for p in ingest updater serving; do
    end=$(rss "$p")
    change=$(echo "100 * ($end - ${first[$p]:-$end}) / ${first[$p]:-$end}" | bc -l)
    printf 'RSS %-8s after 1 min %7.1f MB, at the end %7.1f MB (%+.1f %%); live heap %7.1f -> %7.1f MB\n' "$p" \
        "$(mb "${first[$p]:-0}")" "$(mb "$end")" "$change" "$(mb "${first_heap[$p]:-0}")" "$(mb "$(heap "$p")")"
    awk -v c="$change" 'BEGIN { exit !(c > 10 || c < -10) }' && ok=0
done
echo "largest consumer lag: $max_lag messages"
errors=$(grep -o '"errors": *[0-9]*' "$state/soak-load.json" | grep -o '[0-9]*$')
echo "load tool errors: $errors"
[ "$ok" = 1 ] && [ "$errors" = 0 ] || { echo "SOAK FAILED" >&2; exit 1; }
echo "soak passed"
