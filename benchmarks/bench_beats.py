"""Soundtracks cut on the beat (issue 24 §1), measured by an independent beat tracker on the rendered mix: madmom's
RNN + DBN downbeat tracker (Böck et al.), not the librosa tracker the plans are made with.

The library: the 28 tracks of immich-memories-music, built by the product (full-size CLAP with random weights;
the beats come from the audio alone). The plans: --plans sets of 12 photos in scenes of 2 to 5, whose query
vectors are drawn near tracks of the library (no photo model needed: timing does not depend on captions), at
2.5 to 4 s a photo; each planned with beat sync and, for comparison, by the clock, and mixed
(mix.mix_soundtrack). madmom then finds the beats and downbeats of each mix, and the figures are:
- photo changes within ±50 ms of a detected beat (target ≥ 95 %);
- scene changes within ±70 ms of a detected downbeat (target ≥ 90 %);
- how far each plan's length is from the length asked, in beats;
- each mix's integrated loudness (BS.1770) and true peak.
Before the plans, each tracker's beats on the sample tracks themselves are compared with madmom's: BeatNet's network
(what builds use where its weights are installed) and librosa's onsets alone (the floor without them).

madmom's release on PyPI (0.16.1) does not build on Python 3.11; its repository's master does:
    pip install cython wheel && pip install --no-build-isolation git+https://github.com/CPJKU/madmom

    MUSIC_MOOD_BENCH_CACHE=/tmp/fullmodels python -m benchmarks.bench_beats            # 8 plans
    MUSIC_MOOD_BENCH_CACHE=/tmp/fullmodels python -m benchmarks.bench_beats --plans 3
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np

from benchmarks.common import full_checkpoints, put_in_new_music, sample_tracks

PHOTOS = 12
BEAT_TOLERANCE_S, DOWNBEAT_TOLERANCE_S = 0.050, 0.070
# Random-weight CLAP puts every track near every other: the scene rule is told to split at the smallest drop, so
# that the drawn scenes (each near its own track) are found, as a real model's would be.
SCENE_MIN_DROP = 1e-6


def madmom_tracker():
    """(mono float32 audio at 44.1 kHz) → (beats, downbeats) in seconds, by madmom; None when madmom is missing."""
    try:
        from madmom.features.downbeats import DBNDownBeatTrackingProcessor, RNNDownBeatProcessor
    except ImportError:
        return None
    activations, tracker = RNNDownBeatProcessor(), DBNDownBeatTrackingProcessor(beats_per_bar=[3, 4], fps=100)

    def track(audio: np.ndarray):
        found = tracker(activations(audio))
        return found[:, 0], found[found[:, 1] == 1, 0]

    return track


def photo_sets(db, count: int, seed: int = 0):
    """(photos as (path, Query), seconds per photo) for `count` plans: scenes of 4 to 6 photos, each scene's
    queries near one track's vector (noise added, normalised)."""
    from music_mood.query import Query

    rng = np.random.default_rng(seed)
    for _ in range(count):
        photos = []
        while len(photos) < PHOTOS:
            anchor = db.vectors[rng.integers(len(db))]
            for _ in range(min(int(rng.integers(4, 7)), PHOTOS - len(photos))):
                vector = anchor + rng.normal(0, 0.001, anchor.shape)
                vector = (vector / np.linalg.norm(vector)).astype(np.float32)
                photos.append((f"/photos/{len(photos)}.jpg", Query("", [], "", vector)))
        yield photos, float(rng.choice([2.5, 3.0, 3.5, 4.0]))


def hits(changes: list[float], marks: np.ndarray, tolerance: float) -> tuple[int, int]:
    """(how many of `changes` lie within `tolerance` of a mark, how many changes)."""
    near = [len(marks) and float(np.abs(marks - t).min()) <= tolerance for t in changes]
    return int(sum(near)), len(changes)


def measure(plan, track) -> dict:
    from music_mood.loudness import integrated_loudness, true_peak_dbtp
    from music_mood.mix import mix_soundtrack

    mixed = mix_soundtrack(plan)
    audio = mixed.mean(axis=1).astype(np.float32)
    beats, downbeats = track(audio)
    last = plan.scenes[-1].pieces[-1].beats_s
    period = float(np.median(np.diff(last))) if len(last) > 1 else float("nan")
    asked = plan.seconds_per_photo * len(plan.photos)
    return {"photos": hits([p.start_s for p in plan.photos[1:]], beats, BEAT_TOLERANCE_S),
            "scenes": hits([s.start_s for s in plan.scenes[1:]], downbeats if len(downbeats) else beats,
                           DOWNBEAT_TOLERANCE_S),
            "off_beats": abs(plan.total_s - asked) / period if period == period else 0.0,
            "lufs": integrated_loudness(mixed, 44100), "peak": true_peak_dbtp(mixed)}


def tracker_agreement(track) -> None:
    """Print how often each tracker's beats (and downbeats) on the sample tracks lie within the tolerances of
    madmom's, the mean over the tracks."""
    from music_mood import beatnet
    from music_mood.audio import decode_audio, estimate_tempo
    from music_mood.beats import beat_times, downbeat_times, track_beats

    trackers = {"floor (librosa's onsets)": False}
    if beatnet.available():
        trackers["BeatNet's network"] = True
    agree = {name: ([], []) for name in trackers}
    for path in sample_tracks():
        beats, downbeats = track(decode_audio(path, 44100))
        audio = decode_audio(path, 48_000)
        bpm = estimate_tempo(audio, 48_000)
        for name, network in trackers.items():
            grid = track_beats(audio, 48_000, bpm, network=network)
            for found, marks, tolerance, into in ((beat_times(grid), beats, BEAT_TOLERANCE_S, agree[name][0]),
                                                  (downbeat_times(grid), downbeats, DOWNBEAT_TOLERANCE_S,
                                                   agree[name][1])):
                hit, count = hits(list(found), marks, tolerance)
                into.append(hit / max(1, count))
    for name, (on_beats, on_downbeats) in agree.items():
        print(f"{name}: beats on madmom's beats {100 * np.mean(on_beats):.1f} % (mean of {len(on_beats)} tracks; "
              f"{sum(np.array(on_beats) >= 0.9)} tracks at 90 % or more), downbeats on its downbeats "
              f"{100 * np.mean(on_downbeats):.1f} %")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plans", type=int, default=24)
    args = parser.parse_args(argv)
    track = madmom_tracker()
    if track is None:
        print("madmom is not installed; see this file's docstring for how", file=sys.stderr)
        return 2
    from music_mood.build import build_library
    from music_mood.engines import AUTO
    from music_mood.library import LibraryPaths, load_database
    from music_mood.models import load_clap_audio
    from music_mood.soundtrack import arrange_soundtrack

    tracker_agreement(track)
    clap = load_clap_audio(full_checkpoints()["clap"], AUTO)
    with tempfile.TemporaryDirectory(prefix="bench_beats.") as folder:
        paths = LibraryPaths.at(folder)
        put_in_new_music(paths, sample_tracks())
        build_library(clap, paths, progress=False)
        db = load_database(paths)
        steady = sum(t.get("beats") is not None for t in db.tracks)
        print(f"{len(db)} tracks, {steady} with a steady beat; {args.plans} plans of {PHOTOS} photos; "
              f"{os.cpu_count()} CPUs")
        totals = {synced: {"photos": [0, 0], "scenes": [0, 0], "off_beats": [], "lufs": [], "peak": []}
                  for synced in (True, False)}
        for photos, seconds in photo_sets(db, args.plans):
            for synced in (True, False):
                plan = arrange_soundtrack(db, photos, seconds_per_photo=seconds, beat_sync=synced,
                                          scene_min_drop=SCENE_MIN_DROP)
                figures = measure(plan, track)
                for key in ("photos", "scenes"):
                    totals[synced][key][0] += figures[key][0]
                    totals[synced][key][1] += figures[key][1]
                for key in ("off_beats", "lufs", "peak"):
                    totals[synced][key].append(figures[key])
    for synced, label in ((True, "beat sync (default)"), (False, "by the clock (--no-beat-sync)")):
        t = totals[synced]
        print(f"{label}: photo changes on a beat (±{BEAT_TOLERANCE_S * 1000:.0f} ms) {t['photos'][0]}/"
              f"{t['photos'][1]} = {100 * t['photos'][0] / max(1, t['photos'][1]):.1f} %; scene changes on a "
              f"downbeat (±{DOWNBEAT_TOLERANCE_S * 1000:.0f} ms) {t['scenes'][0]}/{t['scenes'][1]} = "
              f"{100 * t['scenes'][0] / max(1, t['scenes'][1]):.1f} %; length off by at most "
              f"{max(t['off_beats']):.2f} beats; loudness {min(t['lufs']):.2f} to {max(t['lufs']):.2f} LUFS "
              f"(target {plan.loudness_lufs:g}), true peak at most {max(t['peak']):.2f} dBTP")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
