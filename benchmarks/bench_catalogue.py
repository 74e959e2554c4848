"""Storage of a large catalogue of N tracks (default 1 000 000) through the product's own code, timed.

N tracks are committed by save_database as a track table, then loaded by load_database in a new process and asked
what a user's requests ask (a track by id or file, every track's mood, a ranked query with and without a mood
filter), with time and memory; then loaded again in another, as a CLI query is once the index is cached.
The "before": the same records as the inline metadata JSON that save_database writes below TABLE_MIN_TRACKS, written
and loaded raw (save_database writes a table above it). Also the sizes of every file at 1M and 10M tracks.

Records are synthetic but shaped like real ones: every field a build writes (tags from the file and the folder, a
SHA-256, window offsets, a tempo, automatic mood and genre tags with scores, from_file), with titles and artists of
realistic lengths and some non-ASCII. Each track gets one window (not the 18 of a 3-minute track), so the windows
file is N x 512 float32 (2 GB at 1M, not 37 GB); the vectors are random unit float32 rows. The folder's music files
do not exist, except an empty placeholder for each of the few hundred rows the measured queries rank first, because
rank_results passes over a track whose file is missing and asks for more.

At 1M: ~6.5 minutes, ~7 GB of disk in a temp folder removed at the end, and the measuring process peaks at
~7.5 GB of memory.

    python -m benchmarks.bench_catalogue                 # 1 000 000 tracks
    python -m benchmarks.bench_catalogue --tracks 20000  # the smallest catalogue: a few seconds
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WINDOWS_PER_TRACK = 18  # a real 3-minute track: ceil(180 / 10); for the sizes table only
MOODS = ("calm", "energetic", "happy", "nostalgic", "tender", "dark", "dreamy", "epic")
GENRES = ("acoustic", "electronic", "jazz", "rock", "classical", "ambient", "hip hop", "folk")
WORDS = ("night", "river", "Été", "blue", "morning", "Kœnig", "city", "dance", "slow", "golden", "heart", "rain",
         "Straße", "fire", "ocean", "dream", "light", "road", "song", "home")
FILTER = ["calm"]  # the mood filter of the filtered query
TOPK = 10
PLACEHOLDER_ROWS = 200  # of each measured query's ranking that get an (empty) file
QUERY_SEED = 1
LOOKUPS = 100  # point look-ups timed per kind (their mean is reported)

LOAD_JSON = """
import json, sys, time
def rss(kind='VmRSS'):
    return int(open('/proc/self/status').read().split(kind + ':')[1].split()[0]) / 1024
before = rss()
start = time.perf_counter()
with open(sys.argv[1], encoding='utf-8') as f:
    meta = json.loads(f.read())
load = time.perf_counter() - start
print(json.dumps({'seconds': load, 'rss_mb': rss() - before, 'peak_mb': rss('VmHWM') - before,
                  'tracks': len(meta['tracks'])}))
"""

MEASURE_LOADED = """
import json, sys
from benchmarks.bench_catalogue import measure_loaded_library
print(json.dumps(measure_loaded_library(sys.argv[1])))
"""

MEASURE_REOPENED = """
import json, sys
from benchmarks.bench_catalogue import measure_reopened_library
print(json.dumps(measure_reopened_library(sys.argv[1], missing_files=sys.argv[2] == '1')))
"""


def synthetic_record(i: int, rng: random.Random) -> dict:
    """One track's metadata as build._new_record and the tagger write it, with one window (row i of the windows)."""
    title = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 5)))
    artist = " ".join(rng.choice(WORDS).title() for _ in range(rng.randint(1, 3)))
    mood, genre = rng.choice(MOODS), rng.choice(GENRES)
    sha = f"{rng.getrandbits(256):064x}"
    duration = round(rng.uniform(120, 300), 3)
    from_file = {"title": title, "artist": artist, "genre": genre, "mood": mood}
    return {
        "id": sha[:16], **from_file,
        "file_path": f"processed_music/{mood}/{artist} - {title} {i}.mp3",
        "duration_s": duration, "sha256": sha, "segment_offset": i, "segment_count": 1,
        "last_window_start_s": round(duration - 10, 3), "embedded_by": "onnx-int8",
        "bpm": round(rng.uniform(60, 180), 1) if rng.random() < 0.9 else None,
        "auto_tags": {"key": "0123456789abcdef",
                      "mood": [[rng.choice(MOODS), round(rng.uniform(0.1, 0.4), 4)] for _ in range(3)],
                      "genre": [[rng.choice(GENRES), round(rng.uniform(0.1, 0.4), 4)] for _ in range(2)]},
        "from_file": from_file,
    }


def unit_vectors(n: int, dim: int, seed: int, chunk: int = 65_536) -> np.ndarray:
    """float32 (n, dim) random rows of length 1, made `chunk` rows at a time (no float64 (n, dim) temporary)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        rows = rng.standard_normal((min(chunk, n - start), dim), dtype=np.float32)
        out[start:start + len(rows)] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return out


def query_vector(dim: int) -> np.ndarray:
    """The measured queries' vector: a random unit float32 (dim,), the same in every process."""
    return unit_vectors(1, dim, QUERY_SEED)[0]


def memory_mb() -> dict[str, float]:
    """This process's VmRSS (file pages of memory-mapped files included), RssAnon (its own memory) and VmHWM."""
    status = Path("/proc/self/status").read_text()
    return {kind: int(status.split(kind + ":")[1].split()[0]) / 1024 for kind in ("VmRSS", "RssAnon", "VmHWM")}


def shown(seconds: float) -> str:
    """A duration as read best: milliseconds below a second, else seconds."""
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def timed(call):
    """(call's result, seconds it took)."""
    start = time.perf_counter()
    result = call()
    return result, time.perf_counter() - start


def run(script: str, *args: str) -> dict:
    """Run `script` in a new Python process (from the repository root) and return the JSON of its last line."""
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        raise RuntimeError(f"the measuring process failed ({done.returncode}):\n{done.stderr}")
    return json.loads(done.stdout.splitlines()[-1])


def measure_json_before(records: list[dict], dim: int, folder: Path) -> dict:
    """The inline metadata JSON of `records`, written as save_database writes it below TABLE_MIN_TRACKS and read as
    load_database reads it (json.loads, in a new process); the file is removed after."""
    from music_mood.library import EMBEDDING_METHOD, FORMAT_NAME, FORMAT_VERSION

    meta = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "clap_model": "laion/clap-htsat-unfused",
            "embedding": {"method": EMBEDDING_METHOD, "sample_rate": 48000, "window_s": 10.0, "dim": dim},
            "commit": {"id": "x", "vectors_bytes": 0, "segments_bytes": 0, "moves": []}, "tracks": records}
    path = folder / "inline_metadata.json"
    _, write_s = timed(lambda: path.write_bytes(json.dumps(meta, indent=1, ensure_ascii=False).encode()))
    loaded = run(LOAD_JSON, str(path))
    size = path.stat().st_size
    path.unlink()
    return {"bytes": size, "write_s": write_s, **loaded}


def commit_library(records: list[dict], vectors: np.ndarray, folder: Path) -> dict:
    """Commit `records` and `vectors` (also the windows: one a track) as a track table in `folder`, by save_database
    under the library lock. Also times tracks.write_table alone, into a scratch file removed after."""
    from music_mood.database import Database
    from music_mood.library import LibraryPaths, save_database
    from music_mood.storage import acquire_lock
    from music_mood.tracks import write_table

    paths = LibraryPaths.at(folder)
    db = Database(vectors=vectors, tracks=records, segments=vectors, clap_model="laion/clap-htsat-unfused",
                  root=paths.root, table=True)
    lock = acquire_lock(paths.lock, 5)
    try:
        _, save_s = timed(lambda: save_database(db, paths, 48000))
    finally:
        lock.release()
    scratch = folder / "scratch.sqlite"
    _, table_s = timed(lambda: write_table(scratch, records))
    scratch.unlink()
    return {"save_s": save_s, "table_write_s": table_s, "table_bytes": paths.tracks_table.stat().st_size,
            "vectors_bytes": paths.vectors.stat().st_size, "segments_bytes": paths.segments.stat().st_size}


def place_ranked_files(records: list[dict], vectors: np.ndarray, folder: Path) -> int:
    """An empty file for each of the PLACEHOLDER_ROWS rows the measured queries rank first (rank_tracks over the same
    vectors, so the same faiss index, built here in memory and not cached), so that rank_results finds the files
    of its top results as it would in a real library. Returns how many files were made."""
    from music_mood.database import Database
    from music_mood.search import Filters, rank_tracks

    db = Database(vectors=vectors, tracks=records, root=folder)
    vector = query_vector(vectors.shape[1])
    rows = {row for moods in (None, FILTER) for row, _ in rank_tracks(db, vector, PLACEHOLDER_ROWS, Filters(moods))}
    for row in rows:
        path = folder / records[row]["file_path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    return len(rows)


def measure_loaded_library(folder: str) -> dict:
    """In a new process: load the library in `folder` with load_database and time what requests ask of it.

    Returns seconds (*_s), memory in MB relative to before the load, and counts.
    """
    import faiss  # noqa: F401  (imported before the baseline: the library's code, not the catalogue's memory)

    from music_mood.database import find_track
    from music_mood.datafiles import load_array, rows_are_unit
    from music_mood.index import index_path
    from music_mood.library import LibraryPaths, load_database
    from music_mood.search import Filters, rank_results, tag_values
    from music_mood.tracks import TrackTable

    paths = LibraryPaths.at(folder)
    out: dict = {}
    base = memory_mb()

    def held(stage: str) -> None:
        now = memory_mb()
        out[f"rss_{stage}_mb"] = now["VmRSS"] - base["VmRSS"]
        out[f"anon_{stage}_mb"] = now["RssAnon"] - base["RssAnon"]
        out[f"peak_{stage}_mb"] = now["VmHWM"] - base["VmHWM"]

    db, out["load_s"] = timed(lambda: load_database(paths))
    held("load")
    n = len(db)
    _, out["unit_check_s"] = timed(lambda: rows_are_unit(db.vectors))
    out["segments_mmap"] = isinstance(db.segments, np.memmap)
    segments, out["segments_read_s"] = timed(lambda: load_array(paths.segments, None, "segments"))
    del segments
    table, out["table_open_s"] = timed(lambda: TrackTable(paths.tracks_table))
    table.close()

    middle = n // 2
    record, out["record_first_s"] = timed(lambda: db.tracks[middle])
    rows = random.Random(0).sample(range(n), LOOKUPS)
    picked = [db.tracks[row] for row in rows]
    absolute = [str(paths.root / r["file_path"]) for r in picked]
    _, out["record_s"] = timed(lambda: [db.tracks[row] for row in rows])
    found, out["rows_with_id_s"] = timed(lambda: [db.rows_with("id", r["id"]) for r in picked])
    assert found == [[row] for row in rows], "rows_with('id') found other rows"
    found, out["find_track_s"] = timed(lambda: [find_track(db, r["file_path"]) for r in picked])
    assert found == rows
    found, out["find_track_abs_s"] = timed(lambda: [find_track(db, path) for path in absolute])
    assert found == rows
    found, out["row_of_file_s"] = timed(lambda: [db.row_of_file(r["file_path"]) for r in picked])
    assert found == rows
    for key in ("record", "rows_with_id", "find_track", "find_track_abs", "row_of_file"):
        out[f"{key}_s"] /= LOOKUPS
    out["record_middle_id"] = record["id"]

    moods, out["column_mood_s"] = timed(lambda: db.column("mood"))
    out["column_mood_count"] = len(moods)
    del moods
    _, out["column_duration_s"] = timed(lambda: db.column("duration_s"))
    _, out["bpm_values_s"] = timed(lambda: db.bpm_values())
    tagged, out["rows_tagged_s"] = timed(lambda: db.rows_tagged("mood", set(FILTER)))
    out["rows_tagged_count"] = len(tagged)
    _, out["tag_values_s"] = timed(lambda: tag_values(db, "mood"))
    held("columns")

    vector = query_vector(db.dim)
    for name, filter_ in (("all", None), ("calm", FILTER)):
        for call in ("first", "second"):
            (chosen, missing), seconds = timed(lambda: rank_results(db, vector, TOPK, Filters(filter_)))
            out[f"rank_{name}_{call}_s"] = seconds
            out[f"rank_{name}_{call}_results"] = len(chosen)
            out[f"rank_{name}_{call}_missing"] = len(missing)
    cache = index_path(paths.vectors)
    out["index_bytes"] = cache.stat().st_size if cache.exists() else 0
    out["index_used"] = db.search_index() is not None
    held("ranked")
    return out


def measure_reopened_library(folder: str, missing_files: bool) -> dict:
    """In a new process, as a CLI query runs after the first one cached the index: load_database, then the first
    query without a filter (the cached index read and checked against the vectors), then the first with the mood
    filter (its tag columns made). Also index.vectors_fingerprint alone, the check of the cached index. With
    `missing_files`, lastly removes processed_music/ and times a query whose every file is missing."""
    import faiss  # noqa: F401  (as in measure_loaded_library)

    from music_mood.index import vectors_fingerprint
    from music_mood.library import LibraryPaths, load_database
    from music_mood.search import Filters, rank_results

    out: dict = {}
    db, out["load_s"] = timed(lambda: load_database(LibraryPaths.at(folder)))
    vector = query_vector(db.dim)
    _, out["rank_all_s"] = timed(lambda: rank_results(db, vector, TOPK))
    _, out["rank_calm_s"] = timed(lambda: rank_results(db, vector, TOPK, Filters(FILTER)))
    _, out["fingerprint_s"] = timed(lambda: vectors_fingerprint(db.vectors))
    if missing_files:
        shutil.rmtree(LibraryPaths.at(folder).processed_music)
        (chosen, missing), out["rank_no_files_s"] = timed(lambda: rank_results(db, vector, TOPK))
        out["rank_no_files_results"], out["rank_no_files_missing"] = len(chosen), len(missing)
    return out


def print_sizes(per_track: dict[str, float], dim: int, index_measured: bool) -> None:
    """Every file of a library at 1M and 10M tracks, from the per-track sizes measured here (windows at 18 a
    track, as a 3-minute track has; the index's D + 8 bytes a track when no index was built here)."""
    index = f"index {per_track['index']:.0f} B" + ("" if index_measured else " (not built here: D + 8, estimated)")
    print(f"\nSizes (D = {dim} float32; {WINDOWS_PER_TRACK} windows a track; per track as measured here: metadata "
          f"JSON {per_track['json']:.0f} B, track table {per_track['table']:.0f} B, {index}):")
    for n in (1_000_000, 10_000_000):
        vectors, windows = n * dim * 4, n * WINDOWS_PER_TRACK * dim * 4
        print(f"  {n:>10,} tracks: vectors {vectors / 1e9:.1f} GB, windows {windows / 1e9:.0f} GB, metadata JSON "
              f"{per_track['json'] * n / 1e9:.1f} GB or track table {per_track['table'] * n / 1e9:.1f} GB, faiss "
              f"index {per_track['index'] * n / 1e9:.1f} GB, build staging ~{n * 42e3 / 1e9:.0f} GB (42 kB a "
              f"3-minute track, removed after the commit)")


def track_count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 1000:
        raise argparse.ArgumentTypeError(f"{n} is too few: give 1000 tracks or more")
    return n


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                     epilog="example: python -m benchmarks.bench_catalogue --tracks 20000")
    parser.add_argument("--tracks", type=track_count, default=1_000_000, help="tracks in the synthetic library")
    parser.add_argument("--dim", type=int, default=512, help="embedding dimension (CLAP's is 512)")
    parser.add_argument("--no-missing-files", dest="missing_files", action="store_false",
                        help="skip the last measurement, a query after every music file is removed (~35 s at 1M; "
                             "measured: %(default)s)")
    args = parser.parse_args(argv)
    n = args.tracks
    print(f"load average {os.getloadavg()[0]:.1f} (1 min) on {os.cpu_count()} cores; {n:,} synthetic tracks; "
          f"machine shared with other work", flush=True)
    rng = random.Random(0)
    print("making the records", file=sys.stderr, flush=True)
    records = [synthetic_record(i, rng) for i in range(n)]
    with tempfile.TemporaryDirectory(prefix="bench_catalogue.") as folder:
        folder = Path(folder)
        print("writing and loading the inline JSON", file=sys.stderr, flush=True)
        before = measure_json_before(records, args.dim, folder)
        print(f"before, inline metadata JSON (raw write + json.loads in a new process): {before['bytes'] / 1e6:.0f} MB "
              f"({before['bytes'] / n:.0f} bytes a track); written in {before['write_s']:.1f} s; loaded in "
              f"{before['seconds']:.1f} s, holding {before['rss_mb']:.0f} MB (peak {before['peak_mb']:.0f} MB)",
              flush=True)

        print("making the vectors and committing the library", file=sys.stderr, flush=True)
        vectors = unit_vectors(n, args.dim, seed=0)
        saved = commit_library(records, vectors, folder)
        print(f"save_database (table=True, under the lock): {saved['save_s']:.1f} s for vectors "
              f"{saved['vectors_bytes'] / 1e9:.2f} GB + windows {saved['segments_bytes'] / 1e9:.2f} GB + track table "
              f"{saved['table_bytes'] / 1e6:.0f} MB ({saved['table_bytes'] / n:.0f} bytes a track); the table "
              f"alone (tracks.write_table) {saved['table_write_s']:.1f} s", flush=True)
        print("placing files for the measured queries' top rows", file=sys.stderr, flush=True)
        placed = place_ranked_files(records, vectors, folder)
        del records, vectors  # the measuring process has the machine's memory to itself

        print("loading and asking in a new process", file=sys.stderr, flush=True)
        m = run(MEASURE_LOADED, str(folder))
        print("loading and asking again in a new process", file=sys.stderr, flush=True)
        again = run(MEASURE_REOPENED, str(folder), "1" if args.missing_files else "0")
    print(f"load_database in a new process: {shown(m['load_s'])}; held after it VmRSS +{m['rss_load_mb']:.0f} MB "
          f"(RssAnon, its own memory: +{m['anon_load_mb']:.0f} MB; the rest is file pages of memory-mapped vectors), "
          f"peak VmHWM +{m['peak_load_mb']:.0f} MB")
    print(f"  of which: unit-length check of every vector row (datafiles.rows_are_unit, run again alone) "
          f"{shown(m['unit_check_s'])}; the windows (db.segments) "
          f"{'memory-mapped' if m['segments_mmap'] else 'read whole into memory'}, a whole read of that file alone "
          f"(datafiles.load_array) {shown(m['segments_read_s'])}; opening the track table "
          f"(TrackTable: count and last row) {shown(m['table_open_s'])}")
    print(f"one record, db.tracks[{n // 2:,}]: first {m['record_first_s'] * 1e3:.2f} ms; mean of {LOOKUPS} "
          f"random rows {m['record_s'] * 1e3:.3f} ms")
    print(f"by key, mean of {LOOKUPS}: db.rows_with('id') {m['rows_with_id_s'] * 1e3:.3f} ms; find_track(stored "
          f"file path) {m['find_track_s'] * 1e3:.3f} ms; find_track(absolute path) {m['find_track_abs_s'] * 1e3:.3f} "
          f"ms; db.row_of_file {m['row_of_file_s'] * 1e3:.3f} ms")
    print(f"every track at once: db.column('mood') (a field out of every record) {shown(m['column_mood_s'])} "
          f"({m['column_mood_count']:,} values); db.column('duration_s') (a column of the table) "
          f"{shown(m['column_duration_s'])}; db.bpm_values() {shown(m['bpm_values_s'])}; "
          f"db.rows_tagged('mood', {set(FILTER)}) (the mood filter) {shown(m['rows_tagged_s'])} "
          f"({m['rows_tagged_count']:,} rows); search.tag_values(db, 'mood') (the app's mood choices) "
          f"{shown(m['tag_values_s'])}; held after them VmRSS +{m['rss_columns_mb']:.0f} MB, peak "
          f"+{m['peak_columns_mb']:.0f} MB")
    index = (f"faiss index {'used' if m['index_used'] else 'not used (below SEARCH_INDEX_MIN_TRACKS)'}"
             + (f", cached file {m['index_bytes'] / 1e6:.0f} MB" if m["index_bytes"] else ""))
    print(f"rank_results(db, vector, {TOPK}, Filters(moods)), {placed} rows with a placeholder file; {index}:")
    for name, label in (("all", "no filter"), ("calm", f"moods={FILTER}")):
        print(f"  {label}: first {shown(m[f'rank_{name}_first_s'])}, second {shown(m[f'rank_{name}_second_s'])} "
              f"({m[f'rank_{name}_second_results']} results, {m[f'rank_{name}_second_missing']} missing files "
              f"skipped)")
    print(f"  held after the queries: VmRSS +{m['rss_ranked_mb']:.0f} MB (RssAnon +{m['anon_ranked_mb']:.0f} MB), "
          f"peak +{m['peak_ranked_mb']:.0f} MB")
    print(f"again in a new process (the index cached, when one is used): load_database {shown(again['load_s'])}; "
          f"first query, no filter, {shown(again['rank_all_s'])} (index.vectors_fingerprint alone, the cached "
          f"index's check: {shown(again['fingerprint_s'])}); then the first with moods={FILTER} "
          f"{shown(again['rank_calm_s'])}")
    if args.missing_files:
        print(f"  then with every music file removed (no filter): {shown(again['rank_no_files_s'])}, "
              f"{again['rank_no_files_results']} results, {again['rank_no_files_missing']:,} missing files reported")

    print_sizes({"json": before["bytes"] / n, "table": saved["table_bytes"] / n,
                 "index": m["index_bytes"] / n if m["index_bytes"] else args.dim + 8}, args.dim, bool(m["index_bytes"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
