#!/usr/bin/env bash
# Builds OUT_DIR/events.csv in RetailRocket format from MovieLens-100K:
#
#   bench/movielens.sh OUT_DIR
#
# MovieLens-100K ships inside the PyPI wheel recbole==1.2.1 as
# recbole/dataset_example/ml-100k/ml-100k.inter (tab-separated, header
# `user_id:token item_id:token rating:float timestamp:float`). The wheel is
# fetched once with `pip download` into bench/out/cache/ (gitignored) and
# read with python's zipfile; nothing is installed.
#
# Mapping (100,000 ratings -> 155,375 rows): every rating becomes a `view` at the
# rating's timestamp (seconds -> ms); a rating >= 4 also becomes a
# `transaction` of the same user and item 1 s later with its own
# transactionid (0, 1, ... in output order). user_id and item_id are kept
# (1-based integers). Rows are sorted by timestamp, then user, then item. No
# item properties and no category tree are written.
#
# The timestamps are 1997-09 .. 1998-04, before the trainer's default
# accepted range (training.min_ts = 2010-01-01): load it with e.g.
# RECSYS__TRAINING__MIN_TS=0.
#
# Research use only (GroupLens terms); the data are downloaded, never committed.
# PYTHON selects the interpreter (default: python3).
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 OUT_DIR" >&2
    exit 2
fi
out="$1"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="$here/out/cache"
py="${PYTHON:-python3}"

wheel="$(ls "$cache"/recbole-1.2.1-*.whl 2>/dev/null | head -n 1 || true)"
if [ -z "$wheel" ]; then
    mkdir -p "$cache"
    echo "movielens: downloading recbole==1.2.1 into $cache" >&2
    "$py" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
        "recbole==1.2.1" -d "$cache" >&2
    wheel="$(ls "$cache"/recbole-1.2.1-*.whl | head -n 1)"
fi

mkdir -p "$out"
"$py" - "$wheel" "$out/events.csv" <<'EOF'
import os
import sys
import zipfile

wheel, dest = sys.argv[1], sys.argv[2]
member = "recbole/dataset_example/ml-100k/ml-100k.inter"
with zipfile.ZipFile(wheel) as z:
    lines = z.read(member).decode("utf-8").splitlines()
header = lines[0].split("\t")
if header != ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]:
    sys.exit(f"{member}: unexpected header {header}")
ratings = []
for n, line in enumerate(lines[1:], start=2):
    if not line.strip():
        continue
    user, item, rating, ts = line.split("\t")
    if not (user.isdigit() and item.isdigit()):
        sys.exit(f"{member}:{n}: non-integer id in {line!r}")
    ratings.append((int(float(ts)) * 1000, int(user), int(item), float(rating)))
ratings.sort()
rows = []
for ts, user, item, rating in ratings:
    rows.append((ts, user, item, 0))
    if rating >= 4:
        rows.append((ts + 1000, user, item, 1))
rows.sort()
tmp = dest + ".tmp"
views = transactions = 0
with open(tmp, "w", encoding="utf-8", newline="\n") as f:
    f.write("timestamp,visitorid,event,itemid,transactionid\n")
    for ts, user, item, kind in rows:
        if kind == 0:
            f.write(f"{ts},{user},view,{item},\n")
            views += 1
        else:
            f.write(f"{ts},{user},transaction,{item},{transactions}\n")
            transactions += 1
os.replace(tmp, dest)
users = len({r[1] for r in ratings})
items = len({r[2] for r in ratings})
print(
    f"movielens: wrote {dest}: {len(rows)} events ({views} view, {transactions} transaction), "
    f"{users} users, {items} items",
    file=sys.stderr,
)
EOF
