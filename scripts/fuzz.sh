#!/usr/bin/env bash
# Fuzzes every parser of untrusted input for a bounded time (default 60 s per
# target): the event JSON of POST /v1/events and the other wire records, the
# RetailRocket CSV (trainer loader and replay lines), and model version
# directories. Starts from the corpus in fuzz/corpus/; an input that panics is
# written to fuzz/crashes/ and the script fails.
#
#   scripts/fuzz.sh                 # 60 s per target
#   scripts/fuzz.sh 600 csv         # 10 minutes of the CSV target
#   FUZZ_SEED=7 scripts/fuzz.sh     # another random stream
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
cargo build --release --locked -p fuzz --bin recsys-fuzz
exec target/release/recsys-fuzz --seconds "$seconds" --seed "${FUZZ_SEED:-$RANDOM}" "$@"
