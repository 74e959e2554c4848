"""Storage of a large catalogue: the metadata of N tracks (default 1 000 000), written as save_database writes it,
then loaded in a new process as load_database reads it, with its time and memory; and the same records in SQLite
and Parquet, the lazily loaded formats a move would go to. Also the sizes of every file at 1M and 10M tracks.

Records are synthetic but shaped like real ones: every field a build writes (tags from the file and the folder, a
SHA-256, window offsets, automatic mood and genre tags with scores, from_file), with titles and artists of
realistic lengths and some non-ASCII.

    python -m benchmarks.bench_catalogue                 # 1 000 000 records (~2 minutes, ~1 GB on disk)
    python -m benchmarks.bench_catalogue --tracks 100000
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DIM = 512
WINDOWS_PER_TRACK = 18  # a 3-minute track: ceil(180 / 10)
MOODS = ("calm", "energetic", "happy", "nostalgic", "tender", "dark", "dreamy", "epic")
GENRES = ("acoustic", "electronic", "jazz", "rock", "classical", "ambient", "hip hop", "folk")
WORDS = ("night", "river", "Été", "blue", "morning", "Kœnig", "city", "dance", "slow", "golden", "heart", "rain",
         "Straße", "fire", "ocean", "dream", "light", "road", "song", "home")

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

LOAD_SQLITE = """
import json, sqlite3, sys, time
def rss(kind='VmRSS'):
    return int(open('/proc/self/status').read().split(kind + ':')[1].split()[0]) / 1024
before = rss()
start = time.perf_counter()
db = sqlite3.connect(sys.argv[1])
rows = db.execute('SELECT * FROM tracks WHERE rowid IN (1, 500000, 999999, 17, 4242, 77777, 123456, 654321, 9, 10)')
ten = [dict(zip([c[0] for c in rows.description], r)) for r in rows]
ten_s = time.perf_counter() - start
start = time.perf_counter()
moods = db.execute('SELECT mood, genre FROM tracks ORDER BY rowid').fetchall()
columns_s = time.perf_counter() - start
print(json.dumps({'open_and_10_rows_s': ten_s, 'mood_genre_columns_s': columns_s, 'rss_mb': rss() - before,
                  'peak_mb': rss('VmHWM') - before}))
"""

LOAD_PARQUET = """
import json, sys, time
def rss(kind='VmRSS'):
    return int(open('/proc/self/status').read().split(kind + ':')[1].split()[0]) / 1024
import pyarrow.parquet as pq
before = rss()
start = time.perf_counter()
table = pq.read_table(sys.argv[1], columns=['mood', 'genre'])
columns_s = time.perf_counter() - start
start = time.perf_counter()
whole = pq.read_table(sys.argv[1])
whole_s = time.perf_counter() - start
ten = whole.take([0, 500000 % len(whole), 999999 % len(whole)]).to_pylist()
print(json.dumps({'mood_genre_columns_s': columns_s, 'whole_table_s': whole_s, 'rss_mb': rss() - before,
                  'peak_mb': rss('VmHWM') - before}))
"""


def synthetic_record(i: int, rng: random.Random) -> dict:
    """One track's metadata as build._new_record and the tagger write it."""
    title = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 5)))
    artist = " ".join(rng.choice(WORDS).title() for _ in range(rng.randint(1, 3)))
    mood, genre = rng.choice(MOODS), rng.choice(GENRES)
    sha = f"{rng.getrandbits(256):064x}"
    duration = round(rng.uniform(120, 300), 3)
    windows = -(-int(duration) // 10)
    from_file = {"title": title, "artist": artist, "genre": genre, "mood": mood}
    return {
        "id": sha[:16], **from_file,
        "file_path": f"processed_music/{mood}/{artist} - {title} {i}.mp3",
        "duration_s": duration, "sha256": sha, "segment_offset": i * WINDOWS_PER_TRACK, "segment_count": windows,
        "last_window_start_s": round(duration - 10, 3), "embedded_by": "onnx-int8",
        "auto_tags": {"key": "0123456789abcdef",
                      "mood": [[rng.choice(MOODS), round(rng.uniform(0.1, 0.4), 4)] for _ in range(3)],
                      "genre": [[rng.choice(GENRES), round(rng.uniform(0.1, 0.4), 4)] for _ in range(2)]},
        "from_file": from_file,
    }


def run(script: str, path: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--tracks", type=int, default=1_000_000, help="records to write and load")
    args = parser.parse_args(argv)
    rng = random.Random(0)
    print(f"load average {os.getloadavg()[0]:.1f}; {args.tracks:,} synthetic records; machine shared with other work",
          flush=True)
    records = [synthetic_record(i, rng) for i in range(args.tracks)]
    with tempfile.TemporaryDirectory(prefix="bench_catalogue.") as folder:
        folder = Path(folder)
        meta = {"format": "music-mood-database", "version": 1, "clap_model": "laion/clap-htsat-unfused",
                "embedding": {"method": "...", "sample_rate": 48000, "window_s": 10.0, "dim": DIM},
                "commit": {"id": "x", "vectors_bytes": 0, "segments_bytes": 0, "moves": []}, "tracks": records}
        path = folder / "music_database_metadata.json"
        start = time.perf_counter()
        path.write_bytes(json.dumps(meta, indent=1, ensure_ascii=False).encode())  # as save_database does
        write_s = time.perf_counter() - start
        size = path.stat().st_size
        loaded = run(LOAD_JSON, path)
        print(f"JSON (as save_database writes it): {size / 1e6:.0f} MB ({size / args.tracks:.0f} bytes a track); "
              f"written in {write_s:.1f} s; loaded in a new process in {loaded['seconds']:.1f} s, holding "
              f"{loaded['rss_mb']:.0f} MB (peak {loaded['peak_mb']:.0f} MB) for {loaded['tracks']:,} tracks",
              flush=True)
        del meta

        columns = ["id", "title", "artist", "mood", "genre", "file_path", "duration_s", "sha256", "segment_offset",
                   "segment_count", "last_window_start_s", "embedded_by", "auto_tags", "from_file"]
        rows = [[json.dumps(r[c], ensure_ascii=False) if isinstance(r[c], dict) else r[c] for c in columns]
                for r in records]
        del records  # this process holds one copy at a time (the machine is shared)
        sqlite_path = folder / "music_database.sqlite"
        start = time.perf_counter()
        db = sqlite3.connect(sqlite_path)
        db.execute(f"CREATE TABLE tracks ({', '.join(columns)})")
        db.executemany(f"INSERT INTO tracks VALUES ({', '.join('?' * len(columns))})", rows)
        db.commit()
        db.close()
        sqlite_write_s = time.perf_counter() - start
        sq = run(LOAD_SQLITE, sqlite_path)
        print(f"SQLite (one row a track, tags as JSON text): {sqlite_path.stat().st_size / 1e6:.0f} MB, written in "
              f"{sqlite_write_s:.1f} s; open + 10 rows by row number {sq['open_and_10_rows_s'] * 1e3:.1f} ms; "
              f"mood and genre of every track {sq['mood_genre_columns_s']:.2f} s; {sq['rss_mb']:.0f} MB held "
              f"(peak {sq['peak_mb']:.0f} MB)", flush=True)

        import pyarrow as pa
        import pyarrow.parquet as pq

        parquet_path = folder / "music_database.parquet"
        start = time.perf_counter()
        table = pa.Table.from_arrays([pa.array(values) for values in zip(*rows)], names=columns)
        pq.write_table(table, parquet_path)
        parquet_write_s = time.perf_counter() - start
        del table
        pa_ = run(LOAD_PARQUET, parquet_path)
        print(f"Parquet (the same columns): {parquet_path.stat().st_size / 1e6:.0f} MB, written in "
              f"{parquet_write_s:.1f} s; mood and genre of every track {pa_['mood_genre_columns_s']:.2f} s; the "
              f"whole table {pa_['whole_table_s']:.2f} s; {pa_['rss_mb']:.0f} MB held (peak {pa_['peak_mb']:.0f} MB)",
              flush=True)

    per_track_json = size / args.tracks
    print("\nSizes (D = 512 float32; 18 windows a track, as a 3-minute track has; JSON per track as measured):")
    for n in (1_000_000, 10_000_000):
        vectors, windows = n * DIM * 4, n * WINDOWS_PER_TRACK * DIM * 4
        index = n * (DIM + 8) + int(n ** 0.5) * DIM * 4  # IVF-SQ8: a byte a dimension + an id, and the centroids
        print(f"  {n:>10,} tracks: vectors {vectors / 1e9:.1f} GB, windows {windows / 1e9:.0f} GB, metadata JSON "
              f"{per_track_json * n / 1e9:.1f} GB, faiss index {index / 1e9:.1f} GB, build staging "
              f"~{n * 42e3 / 1e9:.0f} GB (42 kB a 3-minute track, removed after the commit)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
