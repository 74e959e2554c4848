"""Building the library on Ray (`music_to_vector.py --ray`) against the plain builder on this machine, Ray's start-up
cost, the driver's own costs, and a projection for a 1 000 000-track catalogue.

(p) plain: build_library on the 28 tracks of immich-memories-music (bench_build.product_build), default precision.
(r) --ray: cluster.build_library_on_ray on a local cluster of this machine's CPUs (no dashboard), the same tracks
    into a fresh library, with 1 and with 2 inference threads in the embedding actor. Each run starts its own actor
    pool, a fixed cost measured by a run over one track; the steady state is what the other 27 tracks add.
(p) and (r) alternate for --rounds rounds; medians. The machine may be shared: compare figures of one run, whose load
average is printed.

The projection multiplies measured per-core costs (CPU) or an estimate from the audio tower's FLOPs (GPU), and says
which it is.

    MUSIC_MOOD_BENCH_CACHE=/tmp/fullmodels python -m benchmarks.bench_ray_build
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.bench_build import product_build
from benchmarks.common import full_checkpoints, put_in_new_music, sample_tracks
from music_mood.engines import ModelChoice

CATALOGUE_TRACKS = 1_000_000
CATALOGUE_TRACK_S = 180.0  # a 3-minute average track: 3 x 10^6 minutes of audio, as issue 13 counts it
CATALOGUE_FILE_MB = 4.0  # an average file of that length (mp3 at ~180 kbit/s), for the driver's hashing
# Dense bf16 tensor throughput from the vendors' data sheets, and the share of it this small-batch audio tower is
# assumed to reach: an assumption, stated as such in the output.
GPUS = {"NVIDIA L4": 121e12, "NVIDIA A100": 312e12, "NVIDIA H100 SXM": 989e12}
GPU_UTILISATION = 0.30


def ray_build(clap, tracks: list[Path], choice: ModelChoice, threads: int):
    """(audio seconds, wall seconds, windows, ClusterBuild) of build_library_on_ray on a fresh library of `tracks`."""
    from music_mood.cluster import build_library_on_ray
    from music_mood.library import LibraryPaths

    with tempfile.TemporaryDirectory(prefix="bench_ray_build.") as folder:
        paths = LibraryPaths.at(folder)
        put_in_new_music(paths, tracks)
        start = time.perf_counter()
        result = build_library_on_ray(clap, paths, choice, progress=False, actor_threads=threads)
        wall = time.perf_counter() - start
    if result.report.failed:
        raise RuntimeError(f"build failed: {result.report.failed}")
    added = result.report.added
    return sum(r["duration_s"] for r in added), wall, sum(r["segment_count"] for r in added), result


def audio_tower_flops(checkpoint: str) -> float:
    """FLOPs (2 x multiply-adds, torch's FlopCounterMode) of CLAP's audio tower for one 10 s window."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from music_mood.models import load_clap_audio
    from music_mood.torch_runtime import log_mel_features

    clap = load_clap_audio(checkpoint, ModelChoice("fp32", "torch"))
    features = log_mel_features(clap.processor.feature_extractor,
                                np.zeros((1, clap.runtime.window_samples), np.float32))
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        clap.model(input_features=features)
    return float(counter.get_total_flops())


def decode_seconds_per_audio_second(tracks: list[Path], sample_rate: int) -> float:
    """One core decoding (PyAV + soxr resampling to the model's rate), as a decode task does."""
    from music_mood.audio import decode_audio

    decode_audio(tracks[0], sample_rate)  # warm-up
    start, audio = time.perf_counter(), 0.0
    for track in tracks:
        audio += len(decode_audio(track, sample_rate)) / sample_rate
    return (time.perf_counter() - start) / audio


def driver_costs(tracks: list[Path], dim: int, windows: int, count: int = 300) -> dict:
    """The driver's per-file work besides Ray: hashing (MB/s, files in the page cache) and a shard's write + read."""
    from music_mood.audio import file_sha256
    from music_mood.shards import Shard, encode_shard, read_shard, remove_staging, write_shard

    start, size = time.perf_counter(), 0
    for track in tracks * 3:
        file_sha256(track)
        size += track.stat().st_size
    hash_mb_s = size / 1e6 / (time.perf_counter() - start)
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((windows + 1, dim)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    shard = Shard(sha256="", vector=rows[0], segments=rows[1:], last_window_start_s=170.0, duration_s=180.0,
                  embedded_by="onnx-int8", file_tags={"title": "a title", "artist": "an artist"})
    with tempfile.TemporaryDirectory(prefix="bench_shards.") as folder:
        folder = Path(folder) / ".ray-staging"
        shas = [f"{i:064x}" for i in range(count)]
        start = time.perf_counter()
        for sha in shas:
            shard.sha256 = sha
            write_shard(folder, sha, encode_shard(shard, "clap", 48_000, 480_000))
        write_ms = (time.perf_counter() - start) / count * 1e3
        start = time.perf_counter()
        for sha in shas:
            assert read_shard(folder, sha, "clap", 48_000, 480_000) is not None
        read_ms = (time.perf_counter() - start) / count * 1e3
        shard_kb = sum(p.stat().st_size for p in folder.rglob("*.npz")) / count / 1e3
        remove_staging(folder)
    return {"hash_mb_s": hash_mb_s, "shard_write_ms": write_ms, "shard_read_ms": read_ms, "shard_kb": shard_kb}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2, help="runs of (p) and of each (r), alternating")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    parser.add_argument("--precision", default="auto", help="precision of both builds")
    parser.add_argument("--backend", default="auto", help="backend of both builds")
    args = parser.parse_args(argv)
    tracks = sample_tracks()
    checkpoint = full_checkpoints()["clap"]
    from music_mood import cluster
    from music_mood.models import load_clap_audio

    choice = ModelChoice(args.precision, args.backend)
    backend, precision = choice.engine("clap-audio")
    clap = load_clap_audio(checkpoint, choice)
    print(f"load average {os.getloadavg()[0]:.1f}; {os.cpu_count()} CPUs; {len(tracks)} tracks; {backend} {precision}; "
          f"machine shared with other work", flush=True)

    start = time.perf_counter()
    import ray  # noqa: F401  (its import is part of what --ray costs)

    import_s = time.perf_counter() - start
    start = time.perf_counter()
    with cluster.connect(num_cpus=args.cpus):
        init_s = time.perf_counter() - start
        print(f"Ray start-up: import {import_s:.1f} s, local cluster ({args.cpus} CPUs, no dashboard) {init_s:.1f} s",
              flush=True)
        start = time.perf_counter()
        ray_build(clap, tracks[:1], choice, 1)  # the first job also starts the cluster's worker processes
        print(f"first --ray run (one track): {time.perf_counter() - start:.1f} s", flush=True)
        fixed = {}
        for threads in (1, 2):  # what every run costs beyond its tracks: its actor's start-up, the model load
            audio, wall, windows, _ = ray_build(clap, tracks[:1], choice, threads)
            fixed[threads] = (audio, wall, windows)
            print(f"(r{threads}) one track ({audio:.0f} s of audio, {windows} windows): {wall:.1f} s", flush=True)
        runs = {"p": [], "r1": [], "r2": []}
        for _ in range(args.rounds):
            audio, wall, windows = product_build(checkpoint, tracks, choice)
            runs["p"].append((audio, wall, windows))
            print(f"(p) plain: {audio:.0f} s of audio in {wall:.1f} s = {audio / wall:.1f}x real time; "
                  f"{wall / windows * 1e3:.0f} ms per window", flush=True)
            for threads in (1, 2):
                audio, wall, windows, result = ray_build(clap, tracks, choice, threads)
                runs[f"r{threads}"].append((audio, wall, windows))
                a1, w1, n1 = fixed[threads]
                steady = (audio - a1) / (wall - w1)
                print(f"(r{threads}) --ray, {threads} thread(s) per actor: {audio:.0f} s of audio in {wall:.1f} s = "
                      f"{audio / wall:.1f}x real time; steady state {steady:.1f}x "
                      f"({(wall - w1) / (windows - n1) * 1e3:.0f} ms per window); "
                      f"{', '.join(f'{k} {v:.1f} s' for k, v in result.seconds.items())}", flush=True)
    print(f"load average after the builds {os.getloadavg()[0]:.1f}", flush=True)

    def median(key, what):
        return statistics.median(what(*run) for run in runs[key])

    plain = median("p", lambda a, w, n: a / w)
    best = max((1, 2), key=lambda t: median(f"r{t}", lambda a, w, n: a / w))
    a1, w1, n1 = fixed[best]
    whole = median(f"r{best}", lambda a, w, n: a / w)
    steady = median(f"r{best}", lambda a, w, n: (a - a1) / (w - w1))
    print(f"medians: (p) {plain:.1f}x; (r{best}) {whole:.1f}x whole run, {steady:.1f}x steady state; "
          f"(r)/(p) = {whole / plain:.2f} whole, {steady / plain:.2f} steady")

    decode = decode_seconds_per_audio_second(tracks, clap.runtime.sampling_rate)
    flops = audio_tower_flops(checkpoint)
    costs = driver_costs(tracks, clap.runtime.dim, int(CATALOGUE_TRACK_S // 10) + 1)
    print(f"decoding: {decode * 1e3:.1f} ms of one core per second of audio; audio tower: {flops / 1e9:.1f} GFLOP "
          f"per 10 s window; driver: SHA-256 {costs['hash_mb_s']:.0f} MB/s, a 3-minute track's shard "
          f"{costs['shard_kb']:.0f} kB, written in {costs['shard_write_ms']:.2f} ms, read in "
          f"{costs['shard_read_ms']:.2f} ms")

    audio_total = CATALOGUE_TRACKS * CATALOGUE_TRACK_S
    per_core = steady / args.cpus  # audio seconds per wall second per CPU core, decoding included
    print(f"\nPROJECTION for {CATALOGUE_TRACKS:,} tracks of {CATALOGUE_TRACK_S:.0f} s ({audio_total / 60:.2g} minutes "
          f"of audio), from this run's steady state: {per_core:.1f}x real time per CPU core, decoding included")
    for cores in (16, 64, 256, 1024):
        print(f"  CPU workers with {cores:5d} cores in all: {audio_total / (per_core * cores) / 3600:8.1f} h")
    windows_total = audio_total / 10
    decode_rate = 1 / (10 * decode)  # windows per second one core decodes
    print(f"  decoding alone: one core decodes {decode_rate:.1f} windows/s "
          f"({CATALOGUE_TRACKS * CATALOGUE_TRACK_S * decode / 3600:.0f} core-hours for the catalogue)")
    for name, peak in GPUS.items():
        per_gpu = peak * GPU_UTILISATION / flops  # windows per second, by FLOPs
        print(f"  ESTIMATE {name} (bf16, {GPU_UTILISATION:.0%} of {peak / 1e12:.0f} TFLOPS dense): {per_gpu:.0f} "
              f"windows/s per GPU by FLOPs; {per_gpu / decode_rate:.0f} CPU cores must decode to keep one fed")
        for count, cores in ((1, 16), (8, 128), (8, 512), (32, 2048)):
            rate = min(count * per_gpu, cores * decode_rate)
            bound = "decoding" if cores * decode_rate < count * per_gpu else "the GPUs"
            print(f"    {count:2d} GPUs, {cores:4d} CPU cores decoding: {windows_total / rate / 3600:6.1f} h "
                  f"(bound by {bound})")
    print(f"  driver: hashing {CATALOGUE_TRACKS * CATALOGUE_FILE_MB / costs['hash_mb_s'] / 3600:.1f} h "
          f"(one core, {CATALOGUE_FILE_MB:.0f} MB files, page cache warm: a lower bound), shards written "
          f"{CATALOGUE_TRACKS * costs['shard_write_ms'] / 3.6e6:.1f} h (while the cluster works) and read at the "
          f"commit {CATALOGUE_TRACKS * costs['shard_read_ms'] / 3.6e6:.1f} h; staging "
          f"{CATALOGUE_TRACKS * costs['shard_kb'] / 1e6:.0f} GB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
