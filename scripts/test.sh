#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, every test.
# Starts the services the tests need when they are not running.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*" >&2; }

# Redis and the Kafka-compatible broker (tansu, installed on first use): the
# ingest tests talk to both over real connections. --cluster: also the local
# Redis Cluster (127.0.0.1:7000-7005) of the cluster-mode run at the end.
scripts/dev-up.sh --cluster

# promtool (Debian package prometheus) for the alert and config tests of
# common/tests/monitoring.rs; the package's daemon is not needed (nor started
# where policy-rc.d forbids it).
if ! command -v promtool >/dev/null 2>&1; then
    log "installing promtool (apt-get install prometheus)"
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    command -v promtool >/dev/null 2>&1 || { echo "promtool still missing after apt-get install prometheus" >&2; exit 1; }
fi

# Headless Chromium and its WebDriver for the demo page's browser test
# (e2e/tests/demo_browser.rs).
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    log "installing chromium and chromium-driver (apt-get)"
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
    command -v chromedriver >/dev/null 2>&1 || { echo "chromedriver still missing after apt-get install chromium-driver" >&2; exit 1; }
fi

# A from-scratch build gains nothing from incremental caches, and across the
# suite's test binaries they would cost gigabytes of disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

log "cargo fmt --check"
cargo fmt --all -- --check

# cargo audit (and cargo deny when installed) against the offline RustSec
# snapshot in ../shared/advisory-db; installs cargo-audit on first use. A
# finding not ignored with its reason in .cargo/audit.toml fails the suite.
log "dependency audit (scripts/audit.sh)"
scripts/audit.sh

log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "cargo doc (broken intra-doc links fail)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet

log "cargo test"
cargo test --workspace --locked "$@"

# The Redis-state tests again, against the Redis Cluster: the apply steps
# (exactly once, two owners, lost state), the live rankings, the re-fold's
# walk over every master, the updater killed mid-stream, two updaters, a
# Redis that lost its state and `recsys-updater verify`, through the real
# broker; and tracking's
# attribution (its steps cut short, two owners, a lost partition) in the
# library, in the updater and end to end; and the whole product end to end
# (replay, train, publish, serve, a model swap under load).
log "cargo test (Redis Cluster)"
export RECSYS_TEST_REDIS_CLUSTER=redis://127.0.0.1:7000,redis://127.0.0.1:7001,redis://127.0.0.1:7002
cargo test --locked -p updater --test store --test live_rankings --test refold --test upgrade "$@"
cargo test --locked -p updater --test broker "$@" -- killed_mid_stream two_instances redis_losing verify_tells
cargo test --locked -p tracking "$@"
cargo test --locked -p updater --test tracking "$@"
cargo test --locked -p e2e --test tracking --test end_to_end "$@"
