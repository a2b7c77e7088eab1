#!/usr/bin/env bash
# The soak of issue #7: the full pipeline under load for SOAK_SECONDS (600):
# scripts/demo.sh starts Redis, the broker, a trained model, ingest, the
# updater and serving; then, at the same time,
#   - recsys-loadtest reads recommendations at SOAK_RATE requests/s (half the
#     measured capacity) from 16 connections, 10 % cold users, and posts 5 %
#     follow-up events to ingest;
#   - recsys-ingest replay feeds the event log into Kafka at SOAK_REPLAY_RATE;
#   - the updater folds everyone in.
# Every 30 s: RSS of each process and the updater's consumer lag. At the end:
# the load tool's summary (errors), RSS after 1 minute vs at the end (±10 %),
# the largest lag. Leaves the demo running (scripts/demo.sh stop).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TOTAL=${SOAK_SECONDS:-600}
RATE=${SOAK_RATE:-9000}
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

echo "soak: ${SECONDS_TOTAL} s at ${RATE} requests/s, replay at ${REPLAY_RATE} events/s" >&2
"$bin/recsys-loadtest" run --url "$api" -c 16 --rate "$RATE" -d "$SECONDS_TOTAL" --warmup 0 \
    --warm-users "$users" --user-prefix "" --cold-share 0.1 \
    --ingest-url "$ingest" --event-share 0.05 --json "$state/soak-load.json" >"$state/soak-load.txt" 2>&1 &
load=$!
"$bin/recsys-ingest" replay "$state/data/events.csv" --rate "$REPLAY_RATE" --quiet >"$state/soak-replay.txt" 2>&1 &
replay=$!

rss() { ps -o rss= -p "$(cat "$state/$1.pid")" 2>/dev/null | tr -d ' ' || echo 0; }
lag() { curl -fsS "$upd/metrics" | awk '/^recsys_updater_consumer_lag\{/ {s += $2} END {print s + 0}'; }
printf '%6s %12s %12s %12s %10s\n' "t (s)" "ingest MB" "updater MB" "serving MB" "lag" | tee "$state/soak.txt"
max_lag=0
declare -A first
start=$(date +%s)
while kill -0 "$load" 2>/dev/null; do
    sleep 30
    t=$(($(date +%s) - start))
    l=$(lag)
    [ "$l" -gt "$max_lag" ] && max_lag=$l
    row=$(printf '%6d %12.1f %12.1f %12.1f %10d' "$t" "$(echo "$(rss ingest)/1024" | bc -l)" \
        "$(echo "$(rss updater)/1024" | bc -l)" "$(echo "$(rss serving)/1024" | bc -l)" "$l")
    echo "$row" | tee -a "$state/soak.txt"
    if [ -z "${first[serving]:-}" ] && [ "$t" -ge 60 ]; then
        for p in ingest updater serving; do first[$p]=$(rss "$p"); done
    fi
done
wait "$load" || true
kill "$replay" 2>/dev/null || true
cat "$state/soak-load.txt"
ok=1
for p in ingest updater serving; do
    end=$(rss "$p")
    change=$(echo "100 * ($end - ${first[$p]:-$end}) / ${first[$p]:-$end}" | bc -l)
    printf 'RSS %-8s after 1 min %7.1f MB, at the end %7.1f MB (%+.1f %%)\n' "$p" \
        "$(echo "${first[$p]:-0}/1024" | bc -l)" "$(echo "$end/1024" | bc -l)" "$change"
    awk -v c="$change" 'BEGIN { exit !(c > 10 || c < -10) }' && ok=0
done
echo "largest consumer lag: $max_lag messages"
errors=$(grep -o '"errors": *[0-9]*' "$state/soak-load.json" | grep -o '[0-9]*$')
echo "load tool errors: $errors"
[ "$ok" = 1 ] && [ "$errors" = 0 ] || { echo "SOAK FAILED" >&2; exit 1; }
echo "soak passed"
