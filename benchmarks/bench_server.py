"""A Subsonic server as a library source (issue 23): the download-plus-embed throughput of a build that adds a
server's songs, against the same build from a folder on this disk, with the full-size CLAP (random weights: the
released checkpoint's compute) and the product's default engine.

A real Supysonic (Debian's supysonic with python3-waitress, as the tests start it: tests/subsonic_server.py) on
127.0.0.1 serves the 28 tracks of immich-memories-music. Each round builds two fresh libraries, alternating:
(a) the server registered as a source: list the songs, download each into memory, decode it from there, embed;
(b) a folder source holding the same 28 files: hash, decode, embed.
Then (c) a re-run of (a) with nothing new: the listing alone, nothing downloaded or committed.
Printed: audio seconds embedded per wall second (× real time) for each, their ratio, megabytes downloaded per
second in (a), and (c)'s time.

    MUSIC_MOOD_BENCH_CACHE=/tmp/fullmodels python -m benchmarks.bench_server            # 28 tracks, 2 rounds
    MUSIC_MOOD_BENCH_CACHE=/tmp/fullmodels python -m benchmarks.bench_server --quick    # 6 tracks, 1 round
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.common import full_checkpoints, sample_tracks

USER, PASSWORD = "bench", "bench-password"


def start_server(folder: Path, tracks: list[Path]):
    from tests.subsonic_server import start_supysonic

    tags = [{"title": t.stem, "artist": "immich-memories-music", "album": t.parent.name, "genre": t.parent.name}
            for t in tracks]
    return start_supysonic(folder, USER, PASSWORD, list(zip(tracks, tags)))


def timed_build(clap, root: Path, source: str) -> tuple[float, float, int]:
    """(audio seconds added, wall seconds, bytes of the files added) for one build of a fresh library at `root`
    with `source` (a folder or a server address) registered; the registration is not timed."""
    from music_mood.build import build_library
    from music_mood.edit import add_source
    from music_mood.library import LibraryPaths

    paths = LibraryPaths.at(root)
    root.mkdir()
    add_source(paths, source, interactive=False)
    start = time.perf_counter()
    report = build_library(clap, paths, progress=False)
    wall = time.perf_counter() - start
    if report.failed or report.warnings:
        raise RuntimeError(f"build failed: {report.problem_lines()}")
    sizes = [r.get("size") or os.path.getsize(r["file_path"]) for r in report.added]
    return sum(r["duration_s"] for r in report.added), wall, sum(sizes)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="6 tracks, 1 round")
    args = parser.parse_args(argv)
    from music_mood.build import build_library
    from music_mood.engines import AUTO
    from music_mood.library import LibraryPaths, committed_state
    from music_mood.models import load_clap_audio
    from music_mood.subsonic import CONFIG_ENV, PASSWORD_ENV

    tracks = sample_tracks()[:: 5 if args.quick else 1]
    rounds = 1 if args.quick else args.rounds
    clap = load_clap_audio(full_checkpoints()["clap"], AUTO)
    with tempfile.TemporaryDirectory(prefix="bench_server.") as tmp:
        tmp = Path(tmp)
        os.environ[CONFIG_ENV], os.environ[PASSWORD_ENV] = str(tmp / "config"), PASSWORD
        server = start_server(tmp / "supysonic", tracks)
        folder = tmp / "Music"
        for track in tracks:
            (folder / track.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(track, folder / track.parent.name / track.name)
        try:
            warm = timed_build(clap, tmp / "warm", str(folder))  # untimed: first decode, resampler, threads
            print(f"{len(tracks)} tracks, {warm[0]:.0f} s of audio; {os.cpu_count()} CPUs, load "
                  f"{os.getloadavg()[0]:.1f}; CLAP {clap.name} ({clap.embedded_by})")
            runs = {"server": [], "folder": []}
            for i in range(rounds):
                for kind, source in (("server", server.url), ("folder", str(folder))):
                    runs[kind].append(timed_build(clap, tmp / f"{kind}-{i}", source))
            paths = LibraryPaths.at(tmp / f"server-{rounds - 1}")
            state = committed_state(paths)
            start = time.perf_counter()
            report = build_library(clap, paths, progress=False)
            rerun = time.perf_counter() - start
            assert not report.added and committed_state(paths) == state, "a re-run with nothing new changed"
        finally:
            server.stop()
    speed = {kind: statistics.median(a / w for a, w, _ in r) for kind, r in runs.items()}
    for kind, r in runs.items():
        walls = ", ".join(f"{w:.1f}" for _, w, _ in r)
        print(f"({'a' if kind == 'server' else 'b'}) {kind}: {speed[kind]:.1f}x real time (median of {len(r)}; "
              f"wall {walls} s)")
    mb_s = statistics.median(b / w / 1e6 for _, w, b in runs["server"])
    print(f"server / folder: {speed['server'] / speed['folder']:.2f}; downloaded {mb_s:.2f} MB/s while embedding")
    print(f"(c) re-run of the server library with nothing new: {rerun:.2f} s (listing only; load "
          f"{os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
