"""Top-10 search over 10k / 100k / 1M synthetic unit vectors: latency, memory, recall@10 against exact search.

Each library is saved as a real database, loaded with load_database and ranked with the product's rank_tracks,
so the figures include what the product does (memory map, index cache, exact re-scoring). Vectors are clustered
(about 1 000 tracks per cluster, within-cluster cosine ~0.4), as real embeddings cluster by style and mood;
queries are drawn the same way.

    python -m benchmarks.bench_search            # N = 10 000, 100 000, 1 000 000
    python -m benchmarks.bench_search --quick    # N = 10 000, 100 000; fewer queries
    python -m benchmarks.bench_search --distribution uniform --sizes 1000000   # the worst case: no clusters
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import current_rss_mb, percentile

DIM, TOPK = 512, 10


def rss_anon_mb() -> float:
    """Anonymous resident memory (not file pages of memory maps, which the kernel can drop and re-read)."""
    with open("/proc/self/status", encoding="ascii") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("RssAnon:"))


def clustered(rng, count: int, centres: np.ndarray, chunk: int = 100_000) -> np.ndarray:
    out = np.empty((count, DIM), np.float32)
    for start in range(0, count, chunk):
        n = min(chunk, count - start)
        rows = centres[rng.integers(0, len(centres), n)] + rng.standard_normal((n, DIM), np.float32) * (
            1.2 / np.sqrt(DIM))
        out[start:start + n] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return out


def exact_top(vectors: np.ndarray, queries: np.ndarray, chunk: int = 100_000) -> np.ndarray:
    """Ground truth: rows of the exact top-10 for each query, (Q, 10)."""
    best = np.full((len(queries), 0), -np.inf, np.float32), np.zeros((len(queries), 0), np.int64)
    for start in range(0, len(vectors), chunk):
        scores = queries @ np.asarray(vectors[start:start + chunk]).T
        s, i = np.concatenate([best[0], scores], 1), np.concatenate(
            [best[1], np.broadcast_to(np.arange(start, start + scores.shape[1]), scores.shape)], 1)
        keep = np.argsort(-s, axis=1, kind="stable")[:, :TOPK]
        best = np.take_along_axis(s, keep, 1), np.take_along_axis(i, keep, 1)
    return best[1]


def measure(n: int, queries_count: int, folder: Path, distribution: str = "clustered") -> dict:
    from music_mood.database import Database
    from music_mood.index import SEARCH_INDEX_MIN_TRACKS
    from music_mood.library import LibraryPaths, load_database, save_database
    from music_mood.search import rank_tracks

    rng = np.random.default_rng(n)
    if distribution == "clustered":
        centres = rng.standard_normal((max(100, n // 1000), DIM)).astype(np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    else:  # uniform on the sphere: no structure at all, the hardest case for any index
        centres = np.zeros((1, DIM), np.float32)
    vectors, queries = clustered(rng, n, centres), clustered(rng, queries_count, centres)
    truth = exact_top(vectors, queries)
    paths = LibraryPaths.at(folder / f"n{n}")
    tracks = [{"file_path": f"processed_music/{i}.opus", "mood": "calm"} for i in range(n)]
    save_database(Database(vectors=vectors, tracks=tracks, segments=np.zeros((0, DIM), np.float32)), paths, 48_000)
    del vectors
    results = {"n": n}

    def run(db, label):
        rank_tracks(db, queries[0], TOPK)  # builds or loads the index, if any
        times, hits = [], 0
        for q, expected in zip(queries, truth):
            start = time.perf_counter()
            ranked = rank_tracks(db, q, TOPK)
            times.append(time.perf_counter() - start)
            hits += len({row for row, _ in ranked} & set(expected.tolist()))
        results[label] = {"p50_ms": percentile(times, 50) * 1e3, "p95_ms": percentile(times, 95) * 1e3,
                          "recall": hits / (TOPK * len(queries))}

    # The product's default for this size.
    before = rss_anon_mb()
    start = time.perf_counter()
    db = load_database(paths)
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    index = db.search_index()
    index_s = time.perf_counter() - start
    run(db, "default")
    results["default"]["path"] = "faiss IVF-SQ8 + exact re-score" if index is not None else "exact"
    results["default"]["load_s"], results["default"]["index_s"] = load_s, index_s
    results["default"]["held_mb"] = rss_anon_mb() - before
    if index is not None:
        import faiss

        results["default"]["index_mb"] = faiss.serialize_index(index).nbytes / 2**20
        results["default"]["float32_mb_mapped"] = db.vectors.nbytes / 2**20
        start = time.perf_counter()
        load_database(paths).search_index()
        results["default"]["cached_index_load_s"] = time.perf_counter() - start
    del db, index

    # The other path, for comparison: exact at every size (in memory, as a small library), the index below the
    # threshold too.
    other = "exact" if n >= SEARCH_INDEX_MIN_TRACKS else "index"
    db = load_database(paths, index_min_tracks=n + 1 if other == "exact" else 1)
    run(db, other)
    if other == "index":
        import faiss

        results["index"]["index_mb"] = faiss.serialize_index(db.search_index()).nbytes / 2**20
    results[other]["vectors_mb"] = db.vectors.nbytes / 2**20
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="N = 10k and 100k only, 50 queries")
    parser.add_argument("--queries", type=int, default=200, help="queries per size")
    parser.add_argument("--sizes", type=int, nargs="*", help="override the library sizes")
    parser.add_argument("--distribution", choices=("clustered", "uniform"), default="clustered",
                        help="clustered like real embeddings, or uniform on the sphere (worst case)")
    args = parser.parse_args(argv)
    sizes = args.sizes or ([10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000])
    queries = 50 if args.quick else args.queries
    from music_mood.index import SEARCH_INDEX_MIN_TRACKS

    print(f"top-{TOPK}, D={DIM}, {args.distribution} vectors, {queries} queries per size; index from "
          f"N >= {SEARCH_INDEX_MIN_TRACKS}")
    with tempfile.TemporaryDirectory(prefix="bench_search.") as folder:
        for n in sizes:
            r = measure(n, queries, Path(folder), args.distribution)
            for label in ("default", "exact", "index"):
                if label not in r:
                    continue
                f = r[label]
                name = f"{label} ({f['path']})" if label == "default" else label
                extra = "  ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in f.items()
                                  if k not in ("p50_ms", "p95_ms", "recall", "path"))
                print(f"N={n:>9,}  {name:<42} p50 {f['p50_ms']:7.2f} ms  p95 {f['p95_ms']:7.2f} ms  "
                      f"recall@10 {f['recall']:.3f}  {extra}", flush=True)
    print(f"process peak RSS {current_rss_mb():.0f} MB (current)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
