#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, every test.
# Starts the services the tests need when they are not running.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*" >&2; }

# Redis and the Kafka-compatible broker (tansu, installed on first use): the
# ingest tests talk to both over real connections.
scripts/dev-up.sh

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "cargo doc (broken intra-doc links fail)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet

log "cargo test"
cargo test --workspace --locked "$@"
