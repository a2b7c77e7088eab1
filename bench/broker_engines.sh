#!/usr/bin/env bash
# The local broker's produce -> consume floor under each storage engine tansu
# builds with here: a private tansu per engine on a free port, then
# `updater/examples/bench_broker.rs` (acks=all idempotent produce at RATE,
# a consumer with the updater's fetch settings; no Redis, no fold-in).
#
#   bench/broker_engines.sh [RATE] [SECONDS]        # default 1000 15
#
# Engines: sqlite (a file under bench/out/broker/), memory and postgres (the local
# PostgreSQL; BENCH_POSTGRES_URL, default postgres://tansu:tansu@localhost:5432/tansu?sslmode=disable,
# whose role and database are created through `su postgres` when missing).
# tansu must be built with the postgres feature (scripts/dev-up.sh does so).
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${1:-1000}
SECS=${2:-15}
PG=${BENCH_POSTGRES_URL:-postgres://tansu:tansu@localhost:5432/tansu?sslmode=disable}
tansu=${TANSU:-$HOME/.cargo/bin/tansu}
out=bench/out/broker
mkdir -p "$out"
[ -x "$tansu" ] || scripts/dev-up.sh
cargo build --release --locked -q -p updater --example bench_broker

if [ -z "${BENCH_POSTGRES_URL:-}" ] && command -v psql >/dev/null; then
    if ! psql "$PG" -Atc 'select 1' >/dev/null 2>&1; then
        su postgres -c "psql -qc \"CREATE ROLE tansu LOGIN PASSWORD 'tansu'\"" 2>/dev/null || true
        su postgres -c "createdb -O tansu tansu" 2>/dev/null || true
    fi
fi
# tansu 0.6.0 neither creates its PostgreSQL schema nor ships it on crates.io
# (tansu-storage's src/ddl is the sqlite one): BENCH_POSTGRES_URL must name a
# database prepared with the schema from tansu's repository.
pg_ready() { [ "$(psql "$PG" -Atc "select to_regclass('cluster') is not null" 2>/dev/null)" = t ]; }

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
broker=""
trap '[ -n "$broker" ] && kill "$broker" 2>/dev/null || true' EXIT

for engine in sqlite memory postgres; do
    case $engine in
        sqlite) rm -f "$out/bench.db"* && url="sqlite://$out/bench.db" ;;
        # Not for the suite (a consumer resuming mid-batch loses messages,
        # ../shared/KAFKA.md), but a floor: nothing is written to disk.
        memory) url="memory://tansu/" ;;
        postgres)
            if ! pg_ready; then
                echo "postgres: no tansu schema at $PG (set BENCH_POSTGRES_URL); skipped"
                continue
            fi
            url=$PG
            ;;
    esac
    port=$(free_port)
    "$tansu" broker --storage-engine "$url" --listener-url "tcp://127.0.0.1:$port" \
        --advertised-listener-url "tcp://127.0.0.1:$port" >"$out/tansu-$engine.log" 2>&1 &
    broker=$!
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
    printf '%-8s ' "$engine"
    RECSYS_TEST_KAFKA=127.0.0.1:$port target/release/examples/bench_broker "$RATE" "$SECS" ||
        echo "failed (see $out/tansu-$engine.log)"
    kill "$broker"
    wait "$broker" 2>/dev/null || true
    broker=""
done
