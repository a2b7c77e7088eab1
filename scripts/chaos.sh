#!/usr/bin/env bash
# The fault scenarios of issue #7, against the real broker and Redis (started
# by scripts/dev-up.sh when missing), in release mode. Each test prints what it
# did and what it checked (--nocapture); the script stops at the first failure.
#
#   scripts/chaos.sh            # all of them
#   RECSYS_CHAOS_KILLS=20 scripts/chaos.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/dev-up.sh

export RECSYS_CHAOS_KILLS=${RECSYS_CHAOS_KILLS:-10}
mkdir -p .dev
# Every scenario runs with the whole workspace selected (`--workspace --test
# NAME FILTER`): `-p` per scenario would resolve features per package and
# rebuild the dependencies for each one.
cargo test --release --locked --workspace --no-run >&2
run() {
    local what=$1
    shift
    printf '\n==> %s\n' "$what" >&2
    local log=.dev/chaos-last.log
    if cargo test --release --locked --workspace "$@" -- --nocapture --test-threads 1 >"$log" 2>&1; then
        # What the test did and checked (its own eprintln lines), then the verdict.
        # (a test's first line can share its line with libtest's "test … ..." prefix)
        grep -oE '(kill [0-9]+/|broker rest|slow redis:|tracking state|[0-9]+ posts:).*|^test .* ok$' "$log" || true
        echo "ok: $what" >&2
    else
        tail -40 "$log" >&2
        echo "FAILED: $what (full log: $log)" >&2
        exit 1
    fi
}

run "1. updater SIGKILLed $RECSYS_CHAOS_KILLS times mid-stream: histories = from-scratch aggregation" \
    --test broker killed_mid_stream
run "1b. two updaters in one group, one SIGKILLed: nothing lost or applied twice" \
    --test broker two_instances
run "2. broker SIGKILLed and restarted under ingest load: 503 while down, acknowledged events exactly once, updater resumes" \
    --test broker_restart
run "3a. Redis loses every key mid-stream: the updater rebuilds histories from the log" \
    --test broker redis_losing_its_state
run "3b. Redis loses the tracking state: counters rebuilt from both logs, no restart" \
    --test broker counters_are_rebuilt
run "3c. Redis stopped and restarted while requests flow: degraded, then personal again" \
    --test redis_restart redis_stopped
run "4. corrupted models announced: refused, the old one keeps serving" \
    --test broker an_announced_model_is_swapped_in_and_a_corrupted_one_refused
run "4b. serving refuses a broken CURRENT on reload" \
    --test routes admin_reload
run "5. slow Redis (DEBUG SLEEP): latency bounded by the Redis budget" \
    --test redis_restart slow_redis
printf '\nall fault scenarios passed\n' >&2
