"""The faiss index path of rank_tracks: same top-k as exact search, filters, and the cached index file."""
from __future__ import annotations

import numpy as np
import pytest

from music_mood.database import Database
from music_mood.index import index_path
from music_mood.library import LibraryPaths, load_database, save_database
from music_mood.search import Filters, rank_tracks

N, DIM, CLUSTERS = 20_000, 512, 200
THRESHOLD = 5_000  # lowered from SEARCH_INDEX_MIN_TRACKS so a 20 000-row library takes the index path


def _clustered(rng, count, centres):
    """Unit rows around random centres, as embeddings of a real library cluster by style and mood."""
    rows = centres[rng.integers(0, len(centres), count)] + rng.normal(size=(count, DIM)) * (1.2 / np.sqrt(DIM))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def library_vectors():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(CLUSTERS, DIM))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    return _clustered(rng, N, centres), _clustered(rng, 20, centres)


def _tracks(n):
    return [{"file_path": f"processed_music/{i}.opus", "mood": ["calm", "happy", "sad", "dark"][i % 4],
             "genre": "jazz" if i % 50 == 0 else "rock"} for i in range(n)]


def _brute_force(vectors, query, topk, allowed=None):
    scores = vectors @ query
    rows = np.arange(len(vectors)) if allowed is None else np.flatnonzero(allowed)
    order = rows[np.lexsort((rows, -scores[rows]))][:topk]
    return [int(i) for i in order]


def test_index_path_returns_the_exact_top_k(library_vectors):
    vectors, queries = library_vectors
    db = Database(vectors=vectors, tracks=_tracks(N), index_min_tracks=THRESHOLD)
    for query in queries:
        ranked = rank_tracks(db, query, 10)
        assert [row for row, _ in ranked] == _brute_force(vectors, query, 10)
        np.testing.assert_allclose([s for _, s in ranked], np.sort(vectors @ query)[::-1][:10], rtol=1e-5)
    assert db.search_index() is not None and db.search_index().ntotal == N


def test_small_library_is_not_indexed(library_vectors):
    vectors, queries = library_vectors
    db = Database(vectors=vectors, tracks=_tracks(N))  # 20 000 < the real threshold
    assert db.search_index() is None
    assert [row for row, _ in rank_tracks(db, queries[0], 10)] == _brute_force(vectors, queries[0], 10)


def test_filters_on_the_index_path_keep_only_matching_tracks(library_vectors):
    vectors, queries = library_vectors
    db = Database(vectors=vectors, tracks=_tracks(N), index_min_tracks=THRESHOLD)
    mood = np.array([t["mood"] for t in db.tracks])
    for query in queries[:5]:
        ranked = rank_tracks(db, query, 10, Filters(moods=["Happy", "calm"]))
        assert [row for row, _ in ranked] == _brute_force(vectors, query, 10, np.isin(mood, ["happy", "calm"]))
        assert {db.tracks[row]["mood"] for row, _ in ranked} <= {"happy", "calm"}


def test_a_rare_filter_falls_back_to_exact_search(library_vectors):
    vectors, queries = library_vectors
    db = Database(vectors=vectors, tracks=_tracks(N), index_min_tracks=THRESHOLD)
    genre = np.array([t["genre"] for t in db.tracks])
    ranked = rank_tracks(db, queries[0], 10, Filters(genres="jazz"))  # 400 rows: fewer than the threshold
    assert [row for row, _ in ranked] == _brute_force(vectors, queries[0], 10, genre == "jazz")


def test_filter_that_the_candidates_miss_falls_back_to_exact(library_vectors, monkeypatch):
    vectors, queries = library_vectors
    tracks = _tracks(N)
    nearest = set(_brute_force(vectors, queries[0], 2_000))
    for i, track in enumerate(tracks):
        track["mood"] = "far" if i not in nearest else "near"  # every candidate the index proposes is filtered out
    db = Database(vectors=vectors, tracks=tracks, index_min_tracks=THRESHOLD)
    far = np.array([t["mood"] == "far" for t in tracks])
    ranked = rank_tracks(db, queries[0], 10, Filters(moods="far"))
    assert [row for row, _ in ranked] == _brute_force(vectors, queries[0], 10, far)


def test_index_is_cached_next_to_the_database_and_rebuilt_when_vectors_change(library_vectors,
                                                                              isolated_library):
    vectors, queries = library_vectors
    paths = LibraryPaths.at(isolated_library)
    save_database(Database(vectors=vectors, tracks=_tracks(N), segments=np.zeros((0, DIM), np.float32)), paths,
                  48_000)
    db = load_database(paths, index_min_tracks=THRESHOLD)
    expected = rank_tracks(db, queries[0], 10)
    cache = index_path(paths.vectors)
    assert cache.exists()
    built = cache.stat().st_mtime_ns

    again = load_database(paths, index_min_tracks=THRESHOLD)
    assert rank_tracks(again, queries[0], 10) == expected
    assert cache.stat().st_mtime_ns == built  # read from the cache, not rebuilt

    changed = vectors.copy()
    changed[_brute_force(vectors, queries[0], 1)[0]] *= -1  # the best match becomes the worst
    save_database(Database(vectors=changed, tracks=_tracks(N), segments=np.zeros((0, DIM), np.float32)), paths,
                  48_000)
    ranked = rank_tracks(load_database(paths, index_min_tracks=THRESHOLD), queries[0], 10)
    assert [row for row, _ in ranked] == _brute_force(changed, queries[0], 10)
    assert cache.stat().st_mtime_ns != built


def test_corrupt_index_cache_is_rebuilt(library_vectors, isolated_library):
    vectors, queries = library_vectors
    paths = LibraryPaths.at(isolated_library)
    save_database(Database(vectors=vectors, tracks=_tracks(N), segments=np.zeros((0, DIM), np.float32)), paths,
                  48_000)
    index_path(paths.vectors).write_bytes(b"not an index")
    ranked = rank_tracks(load_database(paths, index_min_tracks=THRESHOLD), queries[0], 10)
    assert [row for row, _ in ranked] == _brute_force(vectors, queries[0], 10)
