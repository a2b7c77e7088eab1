#!/usr/bin/env python3
"""The Python side of the ALS comparison: fit `implicit` 0.7 on an exported split.

Usage (with the interpreter of bench/setup_venv.sh):

    python bench/implicit_fit.py SPLIT_DIR [--threads N] [--seed S]

SPLIT_DIR is what `recsys-trainer evaluate --export-split SPLIT_DIR` writes:

- train.csv   `user,item,weight`: dense 0-based indices; weight = summed event weight r
- test.csv    `user,item`: the relevant (target) pairs of the test users
- params.json `{"factors", "iterations", "regularization", "alpha", "seed", "threads", "k", ...}`;
              optional `n_users` / `n_items` give the matrix shape, otherwise it is
              max user index (train and test) + 1 by max train item index + 1. Test
              items outside the item range can never be recommended but still count
              in the recall denominator.

It fits `implicit.cpu.als.AlternatingLeastSquares` (confidence alpha * r, conjugate
gradient) on the user x item CSR matrix, times `fit`, recommends the top k for every
test user in one batch call with the user's train items filtered out, and prints ONE
JSON line on stdout:

    {"library": "implicit", "version": "0.7.2", "fit_s": ..., "recommend_s": ...,
     "recall@20": ..., "precision@5": ..., "ndcg@10": ..., "hit_rate@5": ...,
     "coverage@5": ..., "novelty@5": ..., "test_users": ..., ...}

Metrics follow the original system (shared ORIGINAL.md): U = test users with both
recommendations and targets; Precision@5 = mean over U of hits/5; Recall@k = mean over
U of hits/|targets|; NDCG@10 with binary gains and IDCG over min(|targets|, 10) hits;
HitRate@5 = users with a hit in the top 5 / all users with targets; Coverage@5 =
distinct items in all top-5 lists / distinct train items; Novelty@5 = mean over all
top-5 rows of -log2(cnt_i / N_train), cnt_i = train pairs of item i (items without
train pairs cannot be recommended here, so every row has cnt_i > 0).

OPENBLAS_NUM_THREADS is set to 1 before numpy is imported (implicit parallelises
itself and warns about a multi-threaded BLAS); OPENBLAS_CORETYPE is left alone.
Progress and warnings go to stderr.
"""

import os

os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402


def read_csv(path, header, dtypes):
    """Columns of a headed CSV of numbers, checked against the expected header."""
    with open(path, encoding="utf-8") as f:
        first = f.readline().strip().lstrip("\ufeff")
        if first != header:
            sys.exit(f"{path}: header {first!r}, expected {header!r}")
        data = np.loadtxt(f, delimiter=",", dtype=np.float64, ndmin=2)
    if data.size == 0:
        return [np.zeros(0, dtype=t) for t in dtypes]
    if data.shape[1] != len(dtypes):
        sys.exit(f"{path}: {data.shape[1]} columns, expected {len(dtypes)}")
    cols = []
    for j, t in enumerate(dtypes):
        col = data[:, j]
        if np.issubdtype(t, np.integer):
            if (col < 0).any() or (col != np.floor(col)).any():
                sys.exit(f"{path}: column {j + 1} must hold non-negative integers")
        cols.append(col.astype(t))
    return cols


def metrics(rec_users, recs, targets, k, n_target_users, train_items, item_train_pairs, n_train):
    """The original system's metrics over the recommended lists."""
    precision, recall, ndcg, hits5 = [], [], [], 0
    top5_items = set()
    novelty_sum, novelty_rows = 0.0, 0
    for u, row in zip(rec_users, recs):
        row = [int(i) for i in row if i >= 0]
        top5_items.update(row[:5])
        for i in row[:5]:
            if item_train_pairs[i] > 0:
                novelty_sum += -math.log2(item_train_pairs[i] / n_train)
                novelty_rows += 1
        t = targets.get(int(u))
        if not row or not t:
            continue
        h5 = sum(1 for i in row[:5] if i in t)
        hk = sum(1 for i in row[:k] if i in t)
        dcg = sum(1.0 / math.log2(r + 2) for r, i in enumerate(row[:10]) if i in t)
        idcg = sum(1.0 / math.log2(r + 2) for r in range(min(len(t), 10)))
        precision.append(h5 / 5)
        recall.append(hk / len(t))
        ndcg.append(dcg / idcg)
        hits5 += h5 > 0
    mean = lambda xs: float(np.mean(xs)) if xs else 0.0  # noqa: E731
    return {
        f"recall@{k}": mean(recall),
        "precision@5": mean(precision),
        "ndcg@10": mean(ndcg),
        "hit_rate@5": hits5 / n_target_users if n_target_users else 0.0,
        "coverage@5": len(top5_items) / train_items if train_items else 0.0,
        "novelty@5": novelty_sum / novelty_rows if novelty_rows else 0.0,
        "evaluated_users": len(precision),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("split_dir")
    ap.add_argument("--threads", type=int, help="override params.json threads (0 = all cores)")
    ap.add_argument("--seed", type=int, help="override params.json seed")
    args = ap.parse_args()

    import implicit
    from implicit.cpu.als import AlternatingLeastSquares

    with open(os.path.join(args.split_dir, "params.json"), encoding="utf-8") as f:
        params = json.load(f)
    for key in ("factors", "iterations", "regularization", "alpha", "seed", "threads"):
        if key not in params:
            sys.exit(f"params.json: missing {key!r}")
    k = int(params.get("k", 20))
    threads = int(params["threads"] if args.threads is None else args.threads)
    seed = int(params["seed"] if args.seed is None else args.seed)

    t_load = time.perf_counter()
    tu, ti, tw = read_csv(os.path.join(args.split_dir, "train.csv"), "user,item,weight", [np.int64, np.int64, np.float32])
    su, si = read_csv(os.path.join(args.split_dir, "test.csv"), "user,item", [np.int64, np.int64])
    if "n_users" in params:
        n_users = int(params["n_users"])
    else:
        n_users = int(max(tu.max(initial=-1), su.max(initial=-1))) + 1
    n_items = int(params["n_items"]) if "n_items" in params else int(ti.max(initial=-1)) + 1
    if n_users == 0 or n_items == 0:
        sys.exit("train.csv is empty")
    if len(tu) and (tu.max() >= n_users or ti.max() >= n_items):
        sys.exit(f"train.csv has indices outside {n_users} x {n_items}")
    if len(su) and su.max() >= n_users:
        sys.exit(f"test.csv has a user index >= n_users ({n_users})")
    user_items = sp.csr_matrix((tw, (tu, ti)), shape=(n_users, n_items), dtype=np.float32)
    user_items.sum_duplicates()
    load_s = time.perf_counter() - t_load

    targets = {}
    for u, i in zip(su.tolist(), si.tolist()):
        targets.setdefault(u, set()).add(i)
    test_users = np.array(sorted(targets), dtype=np.int32)

    model = AlternatingLeastSquares(
        factors=int(params["factors"]),
        regularization=float(params["regularization"]),
        alpha=float(params["alpha"]),
        iterations=int(params["iterations"]),
        calculate_training_loss=False,
        num_threads=threads,
        random_state=seed,
    )
    t0 = time.perf_counter()
    model.fit(user_items, show_progress=False)
    fit_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    if len(test_users):
        ids, scores = model.recommend(test_users, user_items[test_users], N=min(k, n_items), filter_already_liked_items=True)
        # Fewer than N candidates left: implicit pads the row with filtered
        # (already liked) items scored -FLT_MAX; drop them.
        ids = np.where(np.isfinite(scores) & (scores > np.finfo(np.float32).min / 2), ids, -1)
    else:
        ids = np.zeros((0, k), dtype=np.int32)
    recommend_s = time.perf_counter() - t0

    item_train_pairs = np.bincount(user_items.indices, minlength=n_items)
    train_items = int((item_train_pairs > 0).sum())
    out = {
        "library": "implicit",
        "version": implicit.__version__,
        "fit_s": round(fit_s, 4),
        "recommend_s": round(recommend_s, 4),
        "recommend_users_per_s": round(len(test_users) / recommend_s, 1) if recommend_s > 0 else None,
        "load_s": round(load_s, 4),
    }
    out.update(metrics(test_users, ids, targets, k, len(targets), train_items, item_train_pairs, user_items.nnz))
    out.update(
        {
            "test_users": len(targets),
            "target_pairs": int(sum(len(t) for t in targets.values())),
            "n_users": n_users,
            "n_items": n_items,
            "train_pairs": int(user_items.nnz),
            "factors": int(params["factors"]),
            "iterations": int(params["iterations"]),
            "regularization": float(params["regularization"]),
            "alpha": float(params["alpha"]),
            "seed": seed,
            "threads": threads,
            "k": k,
        }
    )
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
