#!/usr/bin/env bash
# ALS fit time and quality: recsys-trainer vs the Python library `implicit` 0.7.2
# on the SAME data, split and hyper-parameters, with the same number of threads.
#
#   bench/als_vs_implicit.sh [DATA_DIR ...]
#
# Without arguments it runs on MovieLens-100K (bench/movielens.sh) and on
# 3,000,000 generated RetailRocket-shaped events. For every data set and for
# factors 64 and 256 (FACTORS="64 256"), it
#   1. exports the seed-protocol split with `recsys-trainer evaluate --export-split`
#      and evaluates our ALS on it (plain ALS, re-rank off: implicit has none),
#   2. fits implicit on the exported split (bench/implicit_fit.py),
#   3. prints both fit times, both Recall@20 and the ratios.
# Environment: THREADS (default 2), ITERATIONS (15), FACTORS ("64 256"),
# EVENTS (3000000). Results land in bench/out/results/. The event-time filter is
# opened (MIN_TS=0) because MovieLens dates from 1997-98.
set -euo pipefail
cd "$(dirname "$0")/.."

THREADS=${THREADS:-2}
ITERATIONS=${ITERATIONS:-15}
FACTORS=${FACTORS:-"64 256"}
EVENTS=${EVENTS:-3000000}
out=bench/out
mkdir -p "$out/results"

cargo build --release --quiet -p batch-trainer
trainer=target/release/recsys-trainer
PY=$(bench/setup_venv.sh)

datasets=("$@")
if [ ${#datasets[@]} -eq 0 ]; then
    [ -f "$out/ml100k/events.csv" ] || bench/movielens.sh "$out/ml100k" >&2
    gen="$out/generated-$EVENTS"
    [ -f "$gen/events.csv" ] || "$trainer" generate --quiet --out "$gen" --events "$EVENTS" --seed 42 >/dev/null
    datasets=("$out/ml100k" "$gen")
fi

printf '%-28s %7s %11s %11s %7s %11s %11s %7s\n' data factors recsys_fit_s implicit_fit_s ratio recsys_R@20 implicit_R@20 ratio
for data in "${datasets[@]}"; do
    name=$(basename "$data")
    for f in $FACTORS; do
        split="$out/split-$name-$f"
        ours="$out/results/recsys-$name-$f.json"
        theirs="$out/results/implicit-$name-$f.json"
        RECSYS__TRAINING__MIN_TS=0 "$trainer" evaluate --quiet --data-dir "$data" --factors "$f" --iterations "$ITERATIONS" \
            --threads "$THREADS" --no-rerank --export-split "$split" --json "$ours" >/dev/null
        "$PY" bench/implicit_fit.py "$split" --threads "$THREADS" >"$theirs"
        "$PY" - "$ours" "$theirs" "$name" "$f" <<'PY'
import json, sys
ours = json.load(open(sys.argv[1]))
theirs = json.loads(open(sys.argv[2]).read().strip().splitlines()[-1])
of, tf = ours["timings"]["fit_s"], theirs["fit_s"]
orc, trc = ours["als"]["recall@20"], theirs["recall@20"]
print(f"{sys.argv[3]:<28} {sys.argv[4]:>7} {of:>11.2f} {tf:>11.2f} {of / tf:>7.2f} {orc:>11.4f} {trc:>11.4f} {orc / max(trc, 1e-12):>7.2f}")
PY
    done
done
echo "ratio columns: recsys / implicit (fit time: lower is better; recall: higher is better)"
