"""A re-run over a folder source of 10 000 unchanged files (issue 23): what `python music_to_vector.py` costs when
nothing changed, with no model and no embedding (synthetic small files, already in the library).

(a) 10 000 files the library lists: the build walks the folder and compares paths; nothing is read or hashed,
    nothing is committed.
(b) 10 000 files the library does not list (taken out by --remove, so left out by content): the first run
    hashes every one; a re-run finds their (path, size, mtime_ns) in the scan cache and hashes none.

    python -m benchmarks.bench_sources                 # 10 000 files of 16 KB
    python -m benchmarks.bench_sources --files 2000 --kb 4
"""
from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from music_mood.build import build_library
from music_mood.database import Database
from music_mood.library import LibraryPaths, committed_state, save_database
from music_mood.sources import new_source
from music_mood.storage import acquire_lock

DIM, SAMPLE_RATE = 8, 48_000


def make_folder(folder: Path, files: int, kb: int) -> list[tuple[Path, str]]:
    """`files` distinct synthetic .opus files of `kb` KB in 100 sub-folders; [(path, sha256)]."""
    rng, out = np.random.default_rng(0), []
    for i in range(files):
        path = folder / f"album {i % 100:03d}" / f"track {i:05d}.opus"
        path.parent.mkdir(parents=True, exist_ok=True)
        data = rng.bytes(kb * 1024)
        path.write_bytes(data)
        out.append((path, hashlib.sha256(data).hexdigest()))
    return out


def commit_library(paths: LibraryPaths, folder: Path, files: list[tuple[Path, str]], listed: bool) -> None:
    """Commit a library whose source is `folder`: its files listed as tracks, or all taken out by --remove."""
    source = new_source(folder)
    tracks = [{"id": sha[:16], "title": path.stem, "artist": "", "genre": "", "mood": "", "file_path": path.as_posix(),
               "duration_s": 10.0, "sha256": sha, "segment_offset": i, "segment_count": 1, "source": folder.as_posix(),
               "bpm": None} for i, (path, sha) in enumerate(files)] if listed else []
    if not listed:
        source["excluded"] = [sha for _, sha in files]
    rows = np.random.default_rng(1).standard_normal((len(tracks), DIM)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True) if len(rows) else 1
    db = Database(vectors=rows, tracks=tracks, segments=rows.copy(), clap_model="bench", root=paths.root)
    lock = acquire_lock(paths.lock, 5)
    try:
        save_database(db, paths, SAMPLE_RATE, sources=[source])
    finally:
        lock.release()


def timed_build(paths: LibraryPaths) -> float:
    """One build with a model that is never called (nothing is new); wall seconds."""
    clap = SimpleNamespace(name="bench", embedded_by="none",
                           runtime=SimpleNamespace(sampling_rate=SAMPLE_RATE, window_samples=10 * SAMPLE_RATE))
    start = time.perf_counter()
    report = build_library(clap, paths, progress=False)
    seconds = time.perf_counter() - start
    assert not report.added and not report.failed and not report.dropped, report.problem_lines()
    return seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--files", type=int, default=10_000, help="how many files the source holds")
    parser.add_argument("--kb", type=int, default=16, help="each file's size in KB")
    parser.add_argument("--rounds", type=int, default=3, help="re-runs timed for (a); the median is printed")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "Music"
        files = make_folder(folder, args.files, args.kb)
        for listed in (True, False):
            paths = LibraryPaths.at(Path(tmp) / ("listed" if listed else "excluded"))
            paths.root.mkdir()
            commit_library(paths, folder, files, listed)
            first = timed_build(paths)  # (b): hashes every file and fills the scan cache
            state = committed_state(paths)
            again = sorted(timed_build(paths) for _ in range(args.rounds))
            assert committed_state(paths) == state, "a re-run with nothing changed committed"
            what = "listed in the library" if listed else "left out by content (--remove)"
            print(f"{args.files} unchanged files of {args.kb} KB, {what}: first run {first:.2f} s, re-run "
                  f"{again[len(again) // 2]:.2f} s (median of {args.rounds}; {os.cpu_count()} CPUs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
