"""The approximate search index of a large library: a faiss IVF index of 8-bit codes over the track vectors,
cached next to them (music_database_index.faiss) under the fingerprint of the vectors it was built from, so a stale
cache is never used. Deleting the cache is always safe: it is built again on the next query."""
from __future__ import annotations

import hashlib
import math
import sys
from pathlib import Path

import numpy as np

from music_mood.storage import write_atomically

INDEX_FORMAT = b"music-mood-ivf-sq8-v1"
# From this many tracks on, a query is answered by a faiss index instead of a scan of every row, and the vectors
# stay memory-mapped: an exact scan of 200 000 x 512 float32 rows already reads 400 MB per query. Below it, exact
# search is fast and stays the default.
SEARCH_INDEX_MIN_TRACKS = 200_000


def index_path(vectors_path: Path) -> Path:
    """Where the index of the vectors in `vectors_path` is cached: music_database_index.faiss beside it."""
    return vectors_path.with_name(vectors_path.stem + "_index.faiss")


def vectors_fingerprint(vectors: np.ndarray, chunk: int = 1 << 16) -> bytes:
    """SHA-256 of the matrix's shape and float32 bytes: the identity of what an index was built from."""
    digest = hashlib.sha256(f"{INDEX_FORMAT.decode()} {vectors.shape}".encode())
    for start in range(0, len(vectors), chunk):
        digest.update(np.ascontiguousarray(vectors[start:start + chunk], dtype=np.float32).data)
    return digest.digest()


def build_search_index(vectors: np.ndarray):
    """A faiss inner-product index over unit float32 rows (N, D): IVF with about sqrt(N) lists, 8-bit codes.

    Its codes take 1 byte per dimension (a quarter of float32), and a query scans only the nearest lists; the
    caller re-scores the proposed rows exactly against `vectors`. Training uses a fixed-seed sample, so the same
    vectors always give the same index.
    """
    import faiss

    n, dim = vectors.shape
    lists = max(1, int(math.sqrt(n)))
    index = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatIP(dim), dim, lists, faiss.ScalarQuantizer.QT_8bit,
                                          faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = 0
    sample = np.sort(np.random.default_rng(0).choice(n, min(n, 40 * lists), replace=False))  # 39/list: faiss
    index.train(np.ascontiguousarray(vectors[sample], dtype=np.float32))
    for start in range(0, n, 65_536):
        index.add(np.ascontiguousarray(vectors[start:start + 65_536], dtype=np.float32))
    index.nprobe = min(lists, 32)
    return index


def load_search_index(vectors: np.ndarray, vectors_path: Path | None = None):
    """The index for `vectors`: read from the cache next to `vectors_path` when it was built from exactly these
    vectors, else built (and cached there when the folder is writable)."""
    import faiss

    fingerprint = vectors_fingerprint(vectors)
    cache = index_path(vectors_path) if vectors_path is not None else None
    if cache is not None and cache.exists():
        try:
            data = cache.read_bytes()
            if data[:len(INDEX_FORMAT)] == INDEX_FORMAT and data[len(INDEX_FORMAT):][:32] == fingerprint:
                return faiss.deserialize_index(np.frombuffer(data, np.uint8, offset=len(INDEX_FORMAT) + 32))
        except (OSError, RuntimeError):  # unreadable or corrupt cache: rebuild it below
            pass
    index = build_search_index(vectors)
    if cache is not None:
        try:
            blob = faiss.serialize_index(index)
            write_atomically(cache, lambda f: (f.write(INDEX_FORMAT), f.write(fingerprint), f.write(blob.data)))
        except OSError as e:  # a read-only library still works; it just rebuilds the index next time
            print(f"Warning: cannot cache the search index in {cache} ({e})", file=sys.stderr)
    return index
