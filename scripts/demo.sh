#!/usr/bin/env bash
# One-command demo of the whole system on this machine.
#
#   scripts/demo.sh          start (or restart) everything and show it working
#   scripts/demo.sh stop     stop the demo's processes (Redis and the broker stay
#                            up; scripts/dev-down.sh stops them)
#   scripts/demo.sh status   what is running
#
# start: Redis and the Kafka-compatible broker (installed when missing), a
# release build, RetailRocket-shaped data (generated once), a trained and
# published model, then recsys-ingest, recsys-updater and recsys-serving in
# the background, a replay of the events, a new shopper whose list turns from
# popular to personal, a few users' lists, the live stats and the URLs.
# Every run uses fresh topics and a fresh Redis prefix (a run id), so running
# it twice in a row starts clean. State and logs: .demo/.
#
# start proves itself: it exits non-zero (naming the check) when replay did not
# send every line, when the updater did not apply every replayed event, when
# the new shopper's list does not turn personal, when any of its own requests
# answered non-2xx, or when serving or ingest counted a 5xx response.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
state=$root/.demo
bin=$root/target/release
EVENTS=${DEMO_EVENTS:-200000}
INGEST=${DEMO_INGEST_PORT:-8081}
SERVING=${DEMO_SERVING_PORT:-8080}
UPDATER=${DEMO_UPDATER_PORT:-9102}

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Every request of the demo goes through req: it prints the body of a 2xx
# answer; anything else is recorded in $failures (req may run in a pipeline's
# subshell, where a variable would be lost) and req returns 1.
failures=$state/failed-requests
req() {
    local out code
    if ! out=$(curl -sS -w '\n%{http_code}' "$@" 2>&1); then
        printf '%s: %s\n' "$*" "${out%$'\n'*}" | tee -a "$failures" >&2
        return 1
    fi
    code=${out##*$'\n'}
    out=${out%$'\n'*}
    if [[ $code != 2?? ]]; then
        printf 'HTTP %s from %s: %.300s\n' "$code" "$*" "$out" | tee -a "$failures" >&2
        return 1
    fi
    printf '%s' "$out"
}

# Sum of a Prometheus counter's samples whose line matches an extended regex.
metric_sum() {
    local url=$1 pattern=$2
    req "$url" | awk -v p="$pattern" '$0 ~ p {s += $NF} END {printf "%d\n", s}'
}

stop_all() {
    for name in serving updater ingest; do
        local f=$state/$name.pid
        [ -f "$f" ] || continue
        local pid
        pid=$(cat "$f")
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid"
            for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
            log "stopped recsys-$name (pid $pid)"
        fi
        rm -f "$f"
    done
}

status() {
    for name in ingest updater serving; do
        local f=$state/$name.pid
        if [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; then
            echo "recsys-$name: running (pid $(cat "$f")), log $state/$name.log"
        else
            echo "recsys-$name: stopped"
        fi
    done
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_http() {
    local url=$1 name=$2
    for _ in $(seq 300); do
        curl -fsS "$url" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    die "$name did not become healthy at $url; see $state/$name.log"
}

case "${1:-start}" in
stop) stop_all; exit 0 ;;
status) status; exit 0 ;;
start) ;;
*) die "usage: scripts/demo.sh [start|stop|status]" ;;
esac

mkdir -p "$state"
stop_all
rm -f "$failures"
for p in "$INGEST" "$SERVING" "$UPDATER"; do
    port_busy "$p" && die "port $p is taken by another process (set DEMO_*_PORT)"
done

log "local services (Redis, broker)"
scripts/dev-up.sh

log "release build"
cargo build --release --locked -q --bin recsys-trainer --bin recsys-ingest --bin recsys-updater --bin recsys-serving

if [ ! -s "$state/data/events.csv" ]; then
    log "generating $EVENTS RetailRocket-shaped events"
    "$bin/recsys-trainer" generate --out "$state/data" --events "$EVENTS" --seed 7
fi

# A fresh run: its own topics and Redis keys; the previous run's keys go.
run=$(date +%s)
old_prefix=$(cat "$state/prefix" 2>/dev/null || true)
if [ -n "$old_prefix" ]; then
    redis-cli --scan --pattern "${old_prefix}*" | xargs -r -n 500 redis-cli del >/dev/null
fi
echo "demo-$run:" >"$state/prefix"
rm -rf "$state/models"
export RECSYS__REDIS__PREFIX="demo-$run:"
export RECSYS__KAFKA__TOPIC_PREFIX="demo-$run."
export RECSYS__KAFKA__PARTITIONS=3
export RECSYS__MODEL__ARTIFACTS_DIR="$state/models"
export RECSYS__INGEST__LISTEN="127.0.0.1:$INGEST"
export RECSYS__SERVING__LISTEN="127.0.0.1:$SERVING"
export RECSYS__UPDATER__METRICS_LISTEN="127.0.0.1:$UPDATER"
# The demo shop page at /demo/ of serving; its browser posts events to ingest,
# which must allow the page's origin (CORS).
export RECSYS__SERVING__DEMO=true
export RECSYS__SERVING__DEMO_INGEST_URL="http://127.0.0.1:$INGEST"
export RECSYS__INGEST__CORS_ORIGINS="http://127.0.0.1:$SERVING,http://localhost:$SERVING"
# The demo model: 64 factors train in seconds; production uses 256.
export RECSYS__TRAINING__FACTORS=${DEMO_FACTORS:-64}
export RUST_LOG=${RUST_LOG:-info}
# For scripts that drive this demo further (scripts/soak.sh).
env | grep -E '^RECSYS__' | sed 's/^/export /' >"$state/env"

log "training on $state/data (gate, promote, publish)"
"$bin/recsys-trainer" train --data-dir "$state/data" --quiet

log "starting recsys-ingest, recsys-updater, recsys-serving"
for name in ingest updater serving; do
    nohup "$bin/recsys-$name" >"$state/$name.log" 2>&1 &
    echo $! >"$state/$name.pid"
done
wait_http "http://127.0.0.1:$INGEST/health" ingest
wait_http "http://127.0.0.1:$UPDATER/health" updater
wait_http "http://127.0.0.1:$SERVING/ready" serving

# Paced: at full speed the local broker (tansu, sqlite) falls behind its
# group-coordinator duties and the updater's group keeps rebalancing.
log "replaying the event log into Kafka (${DEMO_REPLAY_RATE:-4000} events/s)"
# replay exits non-zero when Kafka did not acknowledge a message.
summary=$("$bin/recsys-ingest" replay "$state/data/events.csv" --rate "${DEMO_REPLAY_RATE:-4000}" --quiet)
echo "$summary"
lines=$(sed -n 's/^lines \([0-9]*\),.*/\1/p' <<<"$summary")
sent=$(sed -n 's/.*, sent \([0-9]*\) .*/\1/p' <<<"$summary")
[ -n "$lines" ] && [ -n "$sent" ] || die "cannot read replay's summary: $summary"
rows=$(($(wc -l <"$state/data/events.csv") - 1))
[ "$lines" -eq "$rows" ] && [ "$sent" -eq "$rows" ] ||
    die "replay sent $sent of $lines lines read, $rows in $state/data/events.csv"

log "waiting for the updater to apply all $sent events"
updater_metrics=http://127.0.0.1:$UPDATER/metrics
# The run's topics are new, so the updater's counters count this replay only.
# Exactly once: every event applied once, none dead-lettered.
for _ in $(seq 600); do
    applied=$(metric_sum "$updater_metrics" '^recsys_updater_events_total[{]outcome="applied"[}]')
    rejected=$(metric_sum "$updater_metrics" '^recsys_updater_events_total[{]outcome="rejected"[}]')
    [ $((applied + rejected)) -ge "$sent" ] && break
    sleep 0.5
done
echo "events applied: $applied of $sent replayed ($rejected rejected)"
[ "$applied" -eq "$sent" ] && [ "$rejected" -eq 0 ] ||
    die "the updater applied $applied and rejected $rejected of the $sent replayed events; see $state/updater.log"

api=http://127.0.0.1:$SERVING
# A shopper the site has never seen, in the treatment arm (the control arm
# always gets the popular list).
shopper=""
for i in $(seq 1 50); do
    u="shopper-$run-$i"
    if req "$api/v1/recommendations/$u?k=5" | grep -q '"variant":"als"'; then shopper=$u; break; fi
done
[ -n "$shopper" ] || die "no treatment-arm shopper found"
log "new shopper $shopper before any event"
before=$(req "$api/v1/recommendations/$shopper?k=5")
echo "$before"
grep -q '"source":"personal"' <<<"$before" && die "the new shopper $shopper has a personal list before any event"
items=$(req "$api/v1/popular?k=3" | grep -o '"item_id":"[^"]*"' | cut -d'"' -f4)
[ "$(wc -w <<<"$items")" -eq 3 ] || die "GET /v1/popular?k=3 did not answer 3 items: $items"
now=$(($(date +%s) * 1000))
body=$(for it in $items; do printf '{"user_id":"%s","item_id":"%s","event":"view","ts":%s},' "$shopper" "$it" "$now"; done)
log "the shopper views 3 items (POST /v1/events)"
req -H 'content-type: application/json' -d "[${body%,}]" "http://127.0.0.1:$INGEST/v1/events"; echo
after=""
for _ in $(seq 100); do
    after=$(req "$api/v1/recommendations/$shopper?k=5")
    grep -q '"source":"personal"' <<<"$after" && break
    sleep 0.1
done
log "the shopper's list now (personal, from the updater's fold-in)"
echo "$after"
grep -q '"source":"personal"' <<<"$after" ||
    die "the shopper's list did not turn personal within 10 s of their 3 views; see $state/updater.log"

log "a few known users"
for u in $(tail -n +2 "$state/data/events.csv" | cut -d, -f2 | sort | uniq -c | sort -rn | head -3 | awk '{print $2}'); do
    req "$api/v1/recommendations/$u?k=5"; echo
done
log "live A/B stats"
req "$api/v1/stats"; echo

log "checks"
errors_5xx=$(($(metric_sum "$api/metrics" '^recsys_serving_http_requests_total[{].*status="5') +
    $(metric_sum "http://127.0.0.1:$INGEST/metrics" '^recsys_ingest_http_request_duration_seconds_count[{].*status="5')))
[ "$errors_5xx" -eq 0 ] || die "serving and ingest answered $errors_5xx requests with a 5xx; see $state/*.log"
[ ! -s "$failures" ] || die "$(wc -l <"$failures") of the demo's requests failed: $(cat "$failures")"
echo "all $sent replayed events applied; the new shopper's list turned personal; no request failed, no 5xx"

cat <<MSG

recsys is running (scripts/demo.sh stop to stop it; logs in .demo/):
  demo shop    $api/demo/   (open it in a browser: click items, watch the row turn personal)
  API          $api/v1/recommendations/{user}?k=10   $api/openapi.json
  ingest       http://127.0.0.1:$INGEST/v1/events
  metrics      $api/metrics  http://127.0.0.1:$INGEST/metrics  http://127.0.0.1:$UPDATER/metrics
  Redis keys   ${RECSYS__REDIS__PREFIX}*   topics ${RECSYS__KAFKA__TOPIC_PREFIX}recsys.*
MSG
