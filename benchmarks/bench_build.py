"""Building the music database from the 28 tracks of immich-memories-music: audio seconds embedded per wall second.

(a) seed-equivalent: the full ClapModel, one random 10 s crop per track, tracks one after another.
(b) the product before ONNX Runtime: music_mood.build.build_library with load_clap_audio (audio tower only) on
    torch fp32, every 10 s window of every track (whole-track coverage), decoding overlapped with embedding.
(c) the product's default now (`--precision auto --backend auto`: ONNX Runtime with 8-bit weights on a CPU
    without native bf16), the same build.
(b) and (c) alternate for --rounds rounds; medians are reported.
(e) with --beat-trackers: (c)'s build with BeatNet's network finding the beats (the default where its weights are
    installed) against the same build with librosa's floor ($MUSIC_MOOD_BEAT_TRACKER=librosa), alternating for
    --rounds rounds.
(d) the tempo estimate (audio.estimate_tempo, which every build runs on each decoded track) against embedding the
    same track with (c)'s model, per track, alternating in one process: wall time, and CPU time (the process's,
    ONNX Runtime's threads included), which a busy machine distorts less; and its first call in a new process
    (librosa's imports).

    python -m benchmarks.bench_build            # all 28 tracks, 2 rounds
    python -m benchmarks.bench_build --quick    # 4 tracks, 1 round
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import full_checkpoints, put_in_new_music, sample_tracks
from music_mood.engines import ModelChoice

CROP_S = 10.0


def seed_build(checkpoint: str, tracks: list[Path]) -> tuple[float, float]:
    """The seed's builder, rebuilt: (audio seconds embedded, wall seconds)."""
    import librosa
    import torch
    from transformers import ClapModel, ClapProcessor

    processor = ClapProcessor.from_pretrained(checkpoint)
    model = ClapModel.from_pretrained(checkpoint, dtype=torch.float32).eval()
    extractor = processor.feature_extractor
    rng = np.random.default_rng(0)
    with torch.inference_mode():  # warm-up, untimed: librosa's first resample and the first forward pass
        warm = librosa.load(tracks[0], sr=extractor.sampling_rate, mono=True)[0][:extractor.nb_max_samples]
        model.get_audio_features(input_features=extractor(warm, sampling_rate=extractor.sampling_rate,
                                                          return_tensors="pt").input_features)
    embedded, start = 0.0, time.perf_counter()
    vectors = []
    with torch.inference_mode():
        for path in tracks:
            audio, _ = librosa.load(path, sr=extractor.sampling_rate, mono=True)
            length = int(CROP_S * extractor.sampling_rate)
            offset = int(rng.integers(0, max(1, len(audio) - length)))
            crop = audio[offset:offset + length]
            features = extractor(crop, sampling_rate=extractor.sampling_rate, return_tensors="pt")
            out = model.get_audio_features(input_features=features.input_features)
            vectors.append(torch.nn.functional.normalize(getattr(out, "pooler_output", out), dim=-1))
            embedded += len(crop) / extractor.sampling_rate
    return embedded, time.perf_counter() - start


def product_build(checkpoint: str, tracks: list[Path], choice: ModelChoice) -> tuple[float, float, int]:
    """(audio seconds embedded, wall seconds, windows) for build_library on a fresh library of `tracks`."""
    from music_mood.audio import decode_audio, estimate_tempo
    from music_mood.build import build_library
    from music_mood.embed import embed_windows, split_windows
    from music_mood.library import LibraryPaths
    from music_mood.models import load_clap_audio

    clap = load_clap_audio(checkpoint, choice)  # exported first if it has to be, untimed
    warm = decode_audio(tracks[0], clap.runtime.sampling_rate)  # warm-up, untimed
    embed_windows(clap, split_windows(warm, clap.runtime.window_samples)[0][:1])
    estimate_tempo(warm, clap.runtime.sampling_rate)  # librosa's imports, once per process (measured in (d))
    with tempfile.TemporaryDirectory(prefix="bench_build.") as folder:
        paths = LibraryPaths.at(folder)
        put_in_new_music(paths, tracks)
        start = time.perf_counter()
        report = build_library(clap, paths, progress=False)
        wall = time.perf_counter() - start
    if report.failed:
        raise RuntimeError(f"build failed: {report.failed}")
    audio_s = sum(r["duration_s"] for r in report.added)
    windows = sum(r["segment_count"] for r in report.added)
    return audio_s, wall, windows


def tempo_cost(clap, tracks: list[Path]) -> dict[str, tuple[float, float]]:
    """{"decode", "tempo", "beats", "embed": (wall seconds, CPU seconds)} summed over `tracks`, each track decoded,
    timed for its tempo, then its beats (beats.track_beats, which every build now runs too), and embedded in turn
    (embed.embed_track with `clap`), so the machine's load falls on all of them alike. Run after a build, so every
    first call has been paid."""
    from threadpoolctl import threadpool_limits

    from music_mood.audio import decode_audio, estimate_tempo
    from music_mood.beats import track_beats
    from music_mood.embed import embed_track

    rate = clap.runtime.sampling_rate
    totals = {"decode": [0.0, 0.0], "tempo": [0.0, 0.0], "beats": [0.0, 0.0], "embed": [0.0, 0.0]}

    def timed_stage(stage, function, *args):
        wall, cpu = time.perf_counter(), time.process_time()
        out = function(*args)
        totals[stage][0] += time.perf_counter() - wall
        totals[stage][1] += time.process_time() - cpu
        return out

    for track in tracks:
        audio = timed_stage("decode", decode_audio, track, rate)
        bpm = timed_stage("tempo", estimate_tempo, audio, rate)
        with threadpool_limits(limits=1, user_api="blas"):  # as audio.read_rhythm runs it
            timed_stage("beats", track_beats, audio, rate, bpm)
        timed_stage("embed", embed_track, clap, audio)
    return {stage: (wall, cpu) for stage, (wall, cpu) in totals.items()}


def beat_tracker_builds(checkpoint: str, tracks: list[Path], choice: ModelChoice, rounds: int) -> int:
    """(e): print each build's speed, the network's and the floor's alternating, and their medians."""
    from music_mood import beatnet
    from music_mood.beats import ONSET_TRACKER, TRACKER_ENV

    if not beatnet.available():
        print(f"BeatNet's weights are not installed ({beatnet.INSTALL})", file=sys.stderr)
        return 2
    speeds = {"network": [], "floor": []}
    for _ in range(rounds):
        for tracker in speeds:
            os.environ.pop(TRACKER_ENV, None)
            if tracker == "floor":
                os.environ[TRACKER_ENV] = ONSET_TRACKER
            audio, wall, _ = product_build(checkpoint, tracks, choice)
            speeds[tracker].append(audio / wall)
            print(f"(e) beats by the {tracker}: {audio:.0f} s of audio in {wall:.1f} s = {audio / wall:.1f}x "
                  f"real time", flush=True)
    os.environ.pop(TRACKER_ENV, None)
    network, floor = (float(np.median(speeds[t])) for t in ("network", "floor"))
    print(f"(e) medians: network {network:.1f}x, floor {floor:.1f}x real time; network / floor = "
          f"{network / floor:.2f}; load average at the end {os.getloadavg()[0]:.1f}")
    return 0


FIRST_TEMPO = """
import time
start = time.perf_counter()
import numpy as np
from music_mood.audio import estimate_tempo
estimate_tempo(np.zeros(48_000 * 10, np.float32), 48_000)
print(time.perf_counter() - start)
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4 tracks (one in seven) and 1 round")
    parser.add_argument("--rounds", type=int, default=2, help="builds of (b) and of (c), alternating")
    parser.add_argument("--precision", default="auto", help="(c)'s precision")
    parser.add_argument("--backend", default="auto", help="(c)'s backend")
    parser.add_argument("--beat-trackers", action="store_true", help="only (e): the build with each beat tracker")
    args = parser.parse_args(argv)
    tracks = sample_tracks()[::7] if args.quick else sample_tracks()
    rounds = 1 if args.quick else args.rounds
    checkpoint = full_checkpoints()["clap"]
    import torch

    choice = ModelChoice(args.precision, args.backend)
    backend, precision = choice.engine("clap-audio")
    if args.beat_trackers:
        return beat_tracker_builds(checkpoint, tracks, choice, args.rounds)
    print(f"load average {os.getloadavg()[0]:.1f}; torch {torch.get_num_threads()} threads; {len(tracks)} tracks; "
          f"(c) = {backend} {precision}")
    seed_audio, seed_wall = seed_build(checkpoint, tracks)
    print(f"(a) seed-equivalent (one {CROP_S:.0f} s crop per track): {seed_audio:.0f} s of audio in {seed_wall:.1f} s "
          f"= {seed_audio / seed_wall:.1f}x real time; coverage {seed_audio:.0f} s", flush=True)
    speeds = {"b": [], "c": []}
    for _ in range(rounds):
        for key, (p, b) in (("b", ("fp32", "torch")), ("c", (precision, backend))):
            audio, wall, windows = product_build(checkpoint, tracks, ModelChoice(p, b))
            speeds[key].append(audio / wall)
            print(f"({key}) {b} {p} (whole tracks, {windows} windows): {audio:.0f} s of audio in {wall:.1f} s "
                  f"= {audio / wall:.1f}x real time; {wall / windows * 1e3:.0f} ms per window", flush=True)
    b_speed, c_speed = float(np.median(speeds["b"])), float(np.median(speeds["c"]))
    print(f"medians: (b) {b_speed:.1f}x, (c) {c_speed:.1f}x real time; (c)/(b) = {c_speed / b_speed:.2f}; "
          f"(c)/(a) = {c_speed / (seed_audio / seed_wall):.2f} in audio seconds per wall second")
    from music_mood.models import load_clap_audio

    cost = tempo_cost(load_clap_audio(checkpoint, choice), tracks)
    per_track = {stage: (wall / len(tracks) * 1e3, cpu / len(tracks) * 1e3) for stage, (wall, cpu) in cost.items()}
    print("(d) per track, ms wall / ms CPU: " + ", ".join(f"{stage} {wall:.0f} / {cpu:.0f}"
                                                         for stage, (wall, cpu) in per_track.items()) +
          f"; the tempo costs {cost['tempo'][0] / cost['embed'][0]:.1%} of the embedding's wall time, "
          f"{cost['tempo'][1] / cost['embed'][1]:.1%} of its CPU time; the beats "
          f"{cost['beats'][0] / cost['embed'][0]:.1%} and {cost['beats'][1] / cost['embed'][1]:.1%}")
    first = subprocess.run([sys.executable, "-c", FIRST_TEMPO], capture_output=True, text=True, check=True,
                           cwd=Path(__file__).resolve().parents[1])
    print(f"(d) the first tempo of a new process (librosa's imports and numba's compilation, once per run): "
          f"{float(first.stdout):.2f} s")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
