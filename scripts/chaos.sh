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
run() {
    local what=$1
    shift
    printf '\n==> %s\n' "$what" >&2
    local log=.dev/chaos-last.log
    if cargo test --release --locked "$@" -- --nocapture --test-threads 1 >"$log" 2>&1; then
        # What the test did and checked (its own eprintln lines), then the verdict.
        grep -E '^(kill |broker |slow redis|tracking state|[0-9]+ posts|test .* ok$)' "$log" || true
        echo "ok: $what" >&2
    else
        tail -40 "$log" >&2
        echo "FAILED: $what (full log: $log)" >&2
        exit 1
    fi
}

run "1. updater SIGKILLed $RECSYS_CHAOS_KILLS times mid-stream: histories = from-scratch aggregation" \
    -p updater --test broker killed_mid_stream
run "1b. two updaters in one group, one SIGKILLed: nothing lost or applied twice" \
    -p updater --test broker two_instances
run "2. broker SIGKILLed and restarted under ingest load: 503 while down, acknowledged events exactly once, updater resumes" \
    -p e2e --test broker_restart
run "3a. Redis loses every key mid-stream: the updater rebuilds histories from the log" \
    -p updater --test broker redis_losing_its_state
run "3b. Redis loses the tracking state: counters rebuilt from both logs, no restart" \
    -p tracking --test broker counters_are_rebuilt
run "3c. Redis stopped and restarted while requests flow: degraded, then personal again" \
    -p serving --test redis_restart redis_stopped
run "4. corrupted models announced: refused, the old one keeps serving" \
    -p updater --test broker an_announced_model_is_swapped_in_and_a_corrupted_one_refused
run "4b. serving refuses a broken CURRENT on reload" \
    -p serving --test routes admin_reload
run "5. slow Redis (DEBUG SLEEP): latency bounded by the Redis budget" \
    -p serving --test redis_restart slow_redis
printf '\nall fault scenarios passed\n' >&2
