#!/usr/bin/env bash
# Many replicas on one machine, against a Redis Cluster:
#
#   - a three-master, three-replica Redis Cluster (scripts/dev-up.sh --cluster)
#     and the local broker;
#   - a model trained and published into the cluster;
#   - two recsys-updater instances in one consumer group (SCALE_PARTITIONS
#     partitions shared between them) and two recsys-serving instances;
#   - the event log replayed into Kafka while recsys-loadtest reads warm users'
#     lists through both serving instances (its connections spread over them);
#   - one updater SIGKILLed once SCALE_KILL_AT_PERCENT of the events are
#     applied: the other takes its partitions over after the session timeout
#     (if the broker does not hand them over — tansu 0.6.0 was seen to keep a
#     survivor on its own partitions — a replacement instance is started, as
#     an orchestrator would).
#
# Prints each instance's share of partitions and requests, the keys on each
# master, the load tool's summary, and the events lost and applied twice as
# `recsys-updater verify` counts them against the topic (the log, not the
# updaters' own counters). Exits non-zero when either count is not 0, when a
# read failed, or when the run did not go as described.
#
#   scripts/scale-demo.sh
#   SCALE_EVENTS=300000 SCALE_REPLAY_RATE=3000 scripts/scale-demo.sh
#
# State and logs: .scale/. The run's processes are stopped at the end and its
# keys (prefix scale-<run>:) deleted, unless SCALE_KEEP=1.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
state=$root/.scale
bin=$root/target/release
EVENTS=${SCALE_EVENTS:-100000}
PARTITIONS=${SCALE_PARTITIONS:-6}
REPLAY_RATE=${SCALE_REPLAY_RATE:-2000}
READ_RATE=${SCALE_READ_RATE:-500}
KILL_AT=${SCALE_KILL_AT_PERCENT:-40}
CLUSTER_PORT=${CLUSTER_PORT:-7000}
SERVING_PORTS=(${SCALE_SERVING_PORTS:-8180 8181})
UPDATER_PORTS=(${SCALE_UPDATER_PORTS:-9180 9181 9182})

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() {
    printf 'scale-demo FAILED: %s\n' "$*" >&2
    exit 1
}

pids=()
prefix=""
cleanup() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do
        for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
    done
    # The run's keys go unless SCALE_KEEP=1 (keyspace passes of later runs and
    # tests on the same cluster would walk them).
    if [ -n "$prefix" ] && [ "${SCALE_KEEP:-0}" != 1 ]; then
        for m in $(masters); do
            redis-cli -p "$m" --scan --pattern "${prefix}*" | sed 's/^/UNLINK /' | redis-cli -p "$m" >/dev/null 2>&1 || true
        done
    fi
}
trap cleanup EXIT

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_http() {
    for _ in $(seq 300); do
        curl -fsS "$1" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    die "$2 did not answer at $1; see $state/$2.log"
}
scrape() { curl -fsS "$1" 2>/dev/null || true; }
# Sum of a metric's samples whose line matches an extended regex.
metric_sum() { scrape "$1" | awk -v p="$2" '$0 ~ p {s += $NF} END {printf "%d\n", s}'; }
# How many partitions an updater holds (0 when it does not answer).
partitions_of() { metric_sum "http://127.0.0.1:$1/metrics" '^recsys_updater_assigned_partitions '; }
applied_of() { metric_sum "http://127.0.0.1:$1/metrics" '^recsys_updater_events_total[{]outcome="applied"[}]'; }
lag_of() { metric_sum "http://127.0.0.1:$1/metrics" '^recsys_updater_consumer_lag[{]'; }
masters() {
    redis-cli -p "$CLUSTER_PORT" cluster nodes | awk '$3 ~ /master/ && $3 !~ /fail/ {split($2, a, "[:@]"); print a[2]}' | sort -n
}

for p in "${SERVING_PORTS[@]}" "${UPDATER_PORTS[@]}"; do
    port_busy "$p" && die "port $p is taken (set SCALE_SERVING_PORTS / SCALE_UPDATER_PORTS)"
done
mkdir -p "$state"

log "local services: Redis Cluster on 127.0.0.1:$CLUSTER_PORT-$((CLUSTER_PORT + 5)), the broker"
scripts/dev-up.sh --cluster

log "release build"
cargo build --release --locked -q --bin recsys-trainer --bin recsys-ingest --bin recsys-updater \
    --bin recsys-serving --bin recsys-loadtest

data=$state/data-$EVENTS
if [ ! -s "$data/events.csv" ]; then
    log "generating $EVENTS RetailRocket-shaped events"
    "$bin/recsys-trainer" generate --out "$data" --events "$EVENTS" --seed 11
fi
rows=$(($(wc -l <"$data/events.csv") - 1))

# A fresh run: its own topics, consumer groups and keys.
run=$(date +%s)
prefix="scale-$run:"
rm -rf "$state/models"
nodes=$(for i in 0 1 2; do printf 'redis://127.0.0.1:%d,' $((CLUSTER_PORT + i)); done)
export RECSYS__REDIS__URL=""
export RECSYS__REDIS__CLUSTER_NODES=${nodes%,}
export RECSYS__REDIS__PREFIX=$prefix
export RECSYS__KAFKA__TOPIC_PREFIX="scale-$run."
export RECSYS__KAFKA__PARTITIONS=$PARTITIONS
export RECSYS__MODEL__ARTIFACTS_DIR=$state/models
export RECSYS__UPDATER__GROUP_ID="scale-$run"
export RECSYS__TRACKING__GROUP_ID="scale-tracking-$run"
export RECSYS__TRAINING__FACTORS=${SCALE_FACTORS:-64}
export RUST_LOG=${RUST_LOG:-info}

log "training on $data and publishing into the cluster"
"$bin/recsys-trainer" train --data-dir "$data" --quiet

log "two updaters (one group, $PARTITIONS partitions) and two serving instances"
# Sets $started to the new process's pid.
start_updater() {
    RECSYS__UPDATER__METRICS_LISTEN="127.0.0.1:$1" nohup "$bin/recsys-updater" >"$state/updater-$1.log" 2>&1 &
    started=$!
    pids+=("$started")
}
start_updater "${UPDATER_PORTS[0]}"
upd_a=$started
start_updater "${UPDATER_PORTS[1]}"
for p in "${SERVING_PORTS[@]}"; do
    RECSYS__SERVING__LISTEN="127.0.0.1:$p" nohup "$bin/recsys-serving" >"$state/serving-$p.log" 2>&1 &
    pids+=($!)
done
for p in "${UPDATER_PORTS[@]:0:2}"; do wait_http "http://127.0.0.1:$p/health" "updater-$p"; done
for p in "${SERVING_PORTS[@]}"; do wait_http "http://127.0.0.1:$p/ready" "serving-$p"; done

# Both members in the group before the stream starts (the second join rebalances).
for _ in $(seq 300); do
    a=$(partitions_of "${UPDATER_PORTS[0]}")
    b=$(partitions_of "${UPDATER_PORTS[1]}")
    [ "$a" -gt 0 ] && [ "$b" -gt 0 ] && [ $((a + b)) -eq "$PARTITIONS" ] && break
    sleep 0.2
done
[ "$a" -gt 0 ] && [ "$b" -gt 0 ] && [ $((a + b)) -eq "$PARTITIONS" ] ||
    die "the two updaters did not share the $PARTITIONS partitions (A holds $a, B $b)"
share_before="updater A (:${UPDATER_PORTS[0]}) $a of $PARTITIONS partitions, updater B (:${UPDATER_PORTS[1]}) $b"

seconds=$(((rows + REPLAY_RATE - 1) / REPLAY_RATE))
warm=$(tail -n +2 "$data/events.csv" | cut -d, -f2 | sort -n | tail -1)
urls=()
for p in "${SERVING_PORTS[@]}"; do urls+=(--url "http://127.0.0.1:$p"); done
log "replaying $rows events at $REPLAY_RATE/s (~$seconds s) while reading at $READ_RATE requests/s"
"$bin/recsys-loadtest" run "${urls[@]}" -c 16 --rate "$READ_RATE" -d $((seconds + 15)) --warmup 1 \
    --warm-users "$warm" --user-prefix "" --cold-share 0.1 --event-share 0 \
    --json "$state/load.json" >"$state/load.txt" 2>&1 &
load=$!
pids+=("$load")
"$bin/recsys-ingest" replay "$data/events.csv" --rate "$REPLAY_RATE" --quiet >"$state/replay.txt" 2>&1 &
replay=$!
pids+=("$replay")

kill_at=$((rows * KILL_AT / 100))
for _ in $(seq 3000); do
    [ $(($(applied_of "${UPDATER_PORTS[0]}") + $(applied_of "${UPDATER_PORTS[1]}"))) -ge "$kill_at" ] && break
    sleep 0.1
done
applied_a=$(applied_of "${UPDATER_PORTS[0]}")
kill -KILL "$upd_a"
wait "$upd_a" 2>/dev/null || true
log "SIGKILLed updater A after $applied_a events it applied (the two: >= $kill_at of $rows)"

wait "$replay" || die "replay failed: $(cat "$state/replay.txt")"
cat "$state/replay.txt"
sent=$(sed -n 's/.*, sent \([0-9]*\) .*/\1/p' "$state/replay.txt")
[ "$sent" = "$rows" ] || die "replay sent ${sent:-?} of $rows lines"

# The survivor takes A's partitions after the session timeout; else a replacement.
log "waiting for the survivor to hold every partition and catch up"
replacement=""
deadline=$((SECONDS + 40))
while :; do
    b=$(partitions_of "${UPDATER_PORTS[1]}")
    held=$b
    lag=$(lag_of "${UPDATER_PORTS[1]}")
    if [ -n "$replacement" ]; then
        held=$((held + $(partitions_of "${UPDATER_PORTS[2]}")))
        lag=$((lag + $(lag_of "${UPDATER_PORTS[2]}")))
    fi
    [ "$held" -eq "$PARTITIONS" ] && [ "$lag" -eq 0 ] && break
    if [ "$SECONDS" -ge "$deadline" ]; then
        if [ -z "$replacement" ]; then
            echo "the broker left updater B on $b of $PARTITIONS partitions: starting a replacement for A (:${UPDATER_PORTS[2]})"
            start_updater "${UPDATER_PORTS[2]}"
            replacement=$started
            deadline=$((SECONDS + 120))
            continue
        fi
        die "the updaters did not catch up (they hold $held of $PARTITIONS partitions, lag $lag)"
    fi
    sleep 0.5
done
wait "$load" || true

log "checking every event of the topic against the histories (recsys-updater verify)"
verified=0
for _ in $(seq 20); do
    if "$bin/recsys-updater" verify >"$state/verify.txt" 2>"$state/verify.err"; then
        verified=1
        break
    fi
    # Lagging is not losing: a partition behind its end is re-checked.
    grep -q 'behind its end' "$state/verify.txt" || break
    sleep 2
done

echo
echo "== partitions"
echo "before the kill: $share_before"
echo "after:           updater B (:${UPDATER_PORTS[1]}) $(partitions_of "${UPDATER_PORTS[1]}") of $PARTITIONS partitions${replacement:+, replacement (:${UPDATER_PORTS[2]}) $(partitions_of "${UPDATER_PORTS[2]}")}"
echo "events applied: A $applied_a (until killed), B $(applied_of "${UPDATER_PORTS[1]}")${replacement:+, replacement $(applied_of "${UPDATER_PORTS[2]}")}"
# "name count" lines in, "<what> :name  count <unit> (share %)" lines out.
shares() {
    awk -v what="$1" -v unit="$2" '{name[NR] = $1; n[NR] = $2; t += $2}
        END {for (i = 1; i <= NR; i++) printf "%s :%s  %d %s (%.1f %%)\n", what, name[i], n[i], unit, t ? 100 * n[i] / t : 0}'
}
echo "== requests per serving instance"
declare -A served
total=0
for p in "${SERVING_PORTS[@]}"; do
    served[$p]=$(metric_sum "http://127.0.0.1:$p/metrics" '^recsys_serving_http_requests_total[{].*route="/v1/recommendations')
    total=$((total + served[$p]))
done
for p in "${SERVING_PORTS[@]}"; do echo "$p ${served[$p]}"; done | shares serving requests
echo "== keys per master (prefix $RECSYS__REDIS__PREFIX)"
for m in $(masters); do
    echo "$m $(redis-cli -p "$m" --scan --pattern "${RECSYS__REDIS__PREFIX}*" | wc -l)"
done | shares master keys
echo "== reads (recsys-loadtest)"
cat "$state/load.txt"
echo "== exactly once (recsys-updater verify)"
cat "$state/verify.txt" "$state/verify.err"

errors=$(grep -o '"errors": *[0-9]*' "$state/load.json" | grep -o '[0-9]*$' || echo "?")
[ "$verified" = 1 ] || die "recsys-updater verify did not pass (above)"
[ "$errors" = 0 ] || die "$errors reads failed"
[ "$total" -gt 0 ] || die "no read reached serving"
for p in "${SERVING_PORTS[@]}"; do [ "${served[$p]}" -gt 0 ] || die "serving :$p got no request"; done
echo "scale demo passed: every event applied exactly once across the kill; no read failed"
