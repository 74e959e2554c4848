"""A soundtrack for 20 photos × 4 s: time to plan it and to render it, render speed, peak RSS; its loudness.

Time to plan on full-size models, to mix the audio and to render the 1280×720 MP4; render speed in video seconds
per wall second (target ≥ 4× on this 2-core CPU); peak RSS.

Rendering: the plan is made by hand (tests/plan_factory.py: four scenes of five photos, each a 20 s stretch of a
sample track from 5 s on), so rendering is measured alone. The photos are the scikit-image ones resized to a
camera's 4032×3024 and saved as JPEG (--small-photos: as shipped, ≤ 512 px), since opening and fitting the photos
is part of the work.

Planning (bench_plan): music_mood.soundtrack.plan_soundtrack on the full-size random-weight BLIP and CLAP
(benchmarks/common.py) at the default precision and backend, as the CLI and the app run them: 20 distinct camera
JPEGs (the five photos as they are, mirrored, upside down and cropped), each described anew every round, against a
library of random track vectors (planning does not read audio, and its ranking costs the same whatever the music).
It runs after rendering, so the peak RSS after rendering is that of rendering alone.

    python -m benchmarks.bench_soundtrack              # 3 rounds, the variants (frame rate, presets), planning
    python -m benchmarks.bench_soundtrack --quick      # 1 round, no variants
    python -m benchmarks.bench_soundtrack --plan-only  # planning alone
    python -m benchmarks.bench_soundtrack --loudness-only  # the loudness figures alone

Loudness (bench_loudness, issue 24): the whole sample library, a 6 s stretch of each of its 28 tracks in turn, and
the four-scene plan above, rendered to .wav and .m4a at the default target: the integrated loudness of each file
(pyloudnorm, BS.1770-4), the spread of the pieces' loudness in the files (each piece away from its cross-fades)
against their spread in the tracks, and the true peak of the .wav and of the decoded .m4a (4× oversampled).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.common import current_rss_mb, peak_rss_mb, sample_tracks

PHOTOS, SECONDS_PER_PHOTO, PHOTOS_PER_SCENE = 20, 4.0, 5
CAMERA_SIZE = (4032, 3024)
PLAN_LIBRARY_TRACKS = 500  # the synthetic library planning ranks against


def make_library(folder: Path) -> tuple[Path, list[str]]:
    """A library folder holding four sample tracks (one per scene), and their paths relative to it."""
    chosen = sample_tracks()[::7][:PHOTOS // PHOTOS_PER_SCENE]
    relative = []
    for track in chosen:
        target = folder / "processed_music" / track.parent.name / track.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(track, target)
        relative.append(target.relative_to(folder).as_posix())
    return folder, relative


def make_photos(folder: Path, small: bool) -> list[Path]:
    """PHOTOS photos in turn from scikit-image's, as camera-size JPEGs unless `small`."""
    import skimage
    from PIL import Image

    data = Path(skimage.__file__).parent / "data"
    names = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png")
    if small:
        return [data / names[i % len(names)] for i in range(PHOTOS)]
    made = []
    for name in names:
        image = Image.open(data / name).convert("RGB")
        size = CAMERA_SIZE if image.width >= image.height else CAMERA_SIZE[::-1]
        made.append(folder / f"{Path(name).stem}.jpg")
        image.resize(size, Image.Resampling.BICUBIC).save(made[-1], quality=90)
    return [made[i % len(made)] for i in range(PHOTOS)]


def make_distinct_photos(folder: Path) -> list[Path]:
    """PHOTOS different camera-size JPEGs: each of scikit-image's five as it is, mirrored, upside down and cropped
    to its middle, so that no photo is the one a model remembers describing."""
    import skimage
    from PIL import Image, ImageOps

    data = Path(skimage.__file__).parent / "data"
    names = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png")
    made = []
    for name in names:
        image = Image.open(data / name).convert("RGB")
        width, height = image.size
        middle = image.crop((width // 6, height // 6, width - width // 6, height - height // 6))
        for variant, picture in (("as-is", image), ("mirrored", ImageOps.mirror(image)),
                                 ("upside-down", image.rotate(180)), ("middle", middle)):
            size = CAMERA_SIZE if picture.width >= picture.height else CAMERA_SIZE[::-1]
            made.append(folder / f"{Path(name).stem}-{variant}.jpg")
            picture.resize(size, Image.Resampling.BICUBIC).save(made[-1], quality=90)
    return made[:PHOTOS]


def make_vector_library(folder: Path, dim: int, tracks: int = PLAN_LIBRARY_TRACKS, seed: int = 0):
    """A Database of `tracks` 3-minute tracks with random unit vectors (dim from the CLAP model) and 18 random
    10 s windows each; their files exist (empty), as planning checks that a track's file is there."""
    import numpy as np

    from music_mood.database import Database

    rng = np.random.default_rng(seed)
    unit = lambda rows: (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)
    windows, records = 18, []
    for i in range(tracks):
        path = folder / "processed_music" / f"track {i:04d}.opus"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        records.append({"file_path": path.relative_to(folder).as_posix(), "title": f"track {i}", "artist": "",
                        "mood": "", "genre": "", "duration_s": 180.0, "segment_offset": i * windows,
                        "segment_count": windows, "last_window_start_s": 170.0})
    return Database(vectors=unit(rng.normal(size=(tracks, dim))), tracks=records,
                    segments=unit(rng.normal(size=(tracks * windows, dim))), root=folder)


def bench_plan(blip, clap, db, photos: list[Path], rounds: int) -> dict:
    """Median wall and CPU seconds (all threads: steadier than wall time on a shared machine) of plan_soundtrack
    for `photos`, every photo described anew each round (the model's remembered descriptions forgotten); the
    last plan's number of scenes."""
    from music_mood.describe import forget_descriptions
    from music_mood.soundtrack import plan_soundtrack

    wall, cpu, plan = [], [], None
    for _ in range(rounds):
        forget_descriptions(blip)
        start, cpu_start = time.perf_counter(), time.process_time()
        plan = plan_soundtrack(blip, clap, db, photos, seconds_per_photo=SECONDS_PER_PHOTO, progress=False)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - cpu_start)
    return {"plan": statistics.median(wall), "plan_cpu": statistics.median(cpu), "scenes": len(plan.scenes),
            "rounds": wall}


def run_plan(folder: Path, rounds: int) -> None:
    """Load the full-size models (the default precision and backend), then time planning; prints one line each."""
    from benchmarks.common import full_checkpoints
    from music_mood.models import load_blip, load_clap_text
    from music_mood.query import embed_text

    checkpoints = full_checkpoints()
    start = time.perf_counter()
    blip, clap = load_blip(checkpoints["blip"]), load_clap_text(checkpoints["clap"])
    dim = embed_text(clap, ["a"]).shape[1]
    print(f"models loaded in {time.perf_counter() - start:.1f} s ({blip.embedded_by}, {clap.embedded_by}); RSS "
          f"{current_rss_mb():.0f} MB", flush=True)
    (folder / "plan-photos").mkdir()
    photos = make_distinct_photos(folder / "plan-photos")
    db = make_vector_library(folder / "plan-library", dim)
    result = bench_plan(blip, clap, db, photos, rounds)
    print(f"plan {PHOTOS} photos (described anew, {len(db)} tracks): {result['plan']:.2f} s wall "
          f"({result['plan'] / PHOTOS:.2f} s a photo; rounds {', '.join(f'{t:.1f}' for t in result['rounds'])}), "
          f"{result['plan_cpu']:.1f} CPU s, {result['scenes']} scene(s); peak RSS {peak_rss_mb():.0f} MB", flush=True)


def bench_loudness(plan, out_folder: Path) -> dict:
    """The loudness figures of `plan` rendered to .wav and .m4a (see the module's docstring), and the seconds
    write_outputs took for both.

    A piece is heard alone only away from its cross-fades, so its gain is measured there: the loudness of that
    middle in the file less that of the same middle in its track. Its stretch's loudness in the file is then its
    whole stretch's in the track plus that gain ("level"), what the mix sets; "middle" is the middles' own spread,
    which also holds how far each middle is from its whole stretch in the music itself."""
    import pyloudnorm

    from music_mood.audio import decode_stretches
    from music_mood.loudness import true_peak_dbtp
    from music_mood.render import SAMPLE_RATE, write_outputs

    meter = pyloudnorm.Meter(SAMPLE_RATE)
    pieces = [p for scene in plan.scenes for p in scene.pieces]
    margin = round((max(plan.crossfade_s / 2, plan.fade_s) + 0.25) * SAMPLE_RATE)  # away from the fades
    outs = [out_folder / "loudness.wav", out_folder / "loudness.m4a"]
    start = time.perf_counter()
    write_outputs(plan, outs, progress=False)
    seconds = time.perf_counter() - start
    stretches = [decode_stretches(Path(plan.library_root) / p.file_path, [(p.track_start_s, p.track_end_s)],
                                  SAMPLE_RATE)[0] for p in pieces]
    wholes = [meter.integrated_loudness(s) for s in stretches]
    result = {"seconds": seconds, "target": plan.loudness_lufs, "source_spread": max(wholes) - min(wholes)}
    for out in outs:
        (samples,) = decode_stretches(out, [(0.0, plan.total_s + 1.0)], SAMPLE_RATE)
        middles = [meter.integrated_loudness(samples[round(p.start_s * SAMPLE_RATE) + margin:
                                                     round(p.end_s * SAMPLE_RATE) - margin]) for p in pieces]
        levels = [whole + middle - meter.integrated_loudness(stretch[margin:-margin])
                  for whole, middle, stretch in zip(wholes, middles, stretches)]
        result[out.suffix] = {"lufs": meter.integrated_loudness(samples), "level": max(levels) - min(levels),
                              "off": max(abs(level - plan.loudness_lufs) for level in levels),
                              "middle": max(middles) - min(middles), "true_peak": true_peak_dbtp(samples)}
    return result


def print_loudness(name: str, plan, out_folder: Path) -> None:
    result = bench_loudness(plan, out_folder)
    files = "; ".join(f"{kind} {r['lufs']:.2f} LUFS, pieces within {r['level']:.2f} LU of each other and "
                      f"{r['off']:.2f} LU of the target (their middles within {r['middle']:.2f} LU), true peak "
                      f"{r['true_peak']:.2f} dBTP" for kind, r in result.items() if kind.startswith("."))
    print(f"loudness, {name} (target {result['target']:g} LUFS; the pieces {result['source_spread']:.1f} LU apart in "
          f"their tracks): {files}; .wav + .m4a written in {result['seconds']:.2f} s", flush=True)


def sample_library_plan(folder: Path):
    """A plan over the whole sample library: a 6 s stretch (from 8 s) of each of its tracks in turn, a scene each."""
    from tests.plan_factory import hand_made_plan

    tracks = sample_tracks()
    for track in tracks:
        target = folder / "processed_music" / track.parent.name / track.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(track, target)
    photos = make_photos(folder, small=True)
    return hand_made_plan(folder, [f"processed_music/{t.parent.name}/{t.name}" for t in tracks],
                          [photos[i % len(photos)] for i in range(len(tracks))], 6.0, 1, 8.0)


def bench_render(plan, out_folder: Path, rounds: int, size=(1280, 720), **video) -> dict:
    """Median wall seconds to mix, to render the MP4 from the mix, and for write_outputs([.mp4]) (both, as the CLI
    runs them); video seconds per wall second of the latter two; the MP4's CPU seconds (all threads: steadier than
    wall time on a shared machine) and size."""
    from music_mood.render import SAMPLE_RATE, mix_soundtrack, write_outputs, write_video

    times = {"mix": [], "video": [], "video_cpu": [], "outputs": []}
    samples = None
    for _ in range(rounds):
        start = time.perf_counter()
        samples = mix_soundtrack(plan, SAMPLE_RATE)
        times["mix"].append(time.perf_counter() - start)
        start, cpu = time.perf_counter(), time.process_time()
        write_video(plan, samples, SAMPLE_RATE, out_folder / "video.mp4", size=size, **video)
        times["video"].append(time.perf_counter() - start)
        times["video_cpu"].append(time.process_time() - cpu)
        if not video:  # the variants differ only in the video
            start = time.perf_counter()
            write_outputs(plan, [out_folder / "outputs.mp4"], progress=False, size=size)
            times["outputs"].append(time.perf_counter() - start)
    result = {key: statistics.median(values) for key, values in times.items() if values}
    result["speed_video"] = plan.total_s / result["video"]
    if "outputs" in result:
        result["speed_outputs"] = plan.total_s / result["outputs"]
    result["mp4_mb"] = (out_folder / "video.mp4").stat().st_size / 1e6
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 round, and no variants")
    parser.add_argument("--rounds", type=int, default=3, help="renders of each kind; medians are reported")
    parser.add_argument("--small-photos", action="store_true",
                        help="scikit-image's photos as shipped (≤ 512 px) instead of camera-size JPEGs")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--plan-only", action="store_true", help="time planning alone (no rendering)")
    what.add_argument("--no-plan", action="store_true", help="time rendering alone (no models are loaded)")
    what.add_argument("--loudness-only", action="store_true", help="the loudness figures alone")
    args = parser.parse_args(argv)
    rounds = 1 if args.quick else args.rounds
    if args.plan_only:
        print(f"load average {os.getloadavg()[0]:.1f}", flush=True)
        with tempfile.TemporaryDirectory(prefix="bench_soundtrack.") as folder:
            run_plan(Path(folder), rounds)
        print(f"load average at the end {os.getloadavg()[0]:.1f}; peak RSS {peak_rss_mb():.0f} MB")
        return 0

    from music_mood.render import FPS, HOLD_S, X264_PRESET
    from tests.plan_factory import hand_made_plan

    with tempfile.TemporaryDirectory(prefix="bench_soundtrack.") as folder:
        folder = Path(folder)
        root, tracks = make_library(folder / "library")
        (folder / "photos").mkdir()
        (folder / "out").mkdir()
        photos = make_photos(folder / "photos", args.small_photos)
        plan = hand_made_plan(root, tracks, photos, SECONDS_PER_PHOTO, PHOTOS_PER_SCENE)
        if args.loudness_only:
            print_loudness(f"the {len(tracks)}-scene plan", plan, folder / "out")
            print_loudness("the sample library's 28 tracks", sample_library_plan(folder / "whole"), folder / "out")
            return 0
        print(f"load average {os.getloadavg()[0]:.1f}; {PHOTOS} photos × {SECONDS_PER_PHOTO:g} s = {plan.total_s:g} s "
              f"at 1280×720, {len(tracks)} scenes; photos "
              f"{'as shipped' if args.small_photos else f'{CAMERA_SIZE[0]}×{CAMERA_SIZE[1]} JPEG'}; "
              f"RSS before rendering {current_rss_mb():.0f} MB", flush=True)
        result = bench_render(plan, folder / "out", rounds)
        print(f"default ({FPS} fps, stills held {HOLD_S:g} s, x264 {X264_PRESET}): mix {result['mix']:.2f} s, "
              f"MP4 from the mix {result['video']:.2f} s = {result['speed_video']:.1f}× real time "
              f"({result['video_cpu']:.1f} CPU s); "
              f"write_outputs(.mp4) {result['outputs']:.2f} s = {result['speed_outputs']:.1f}× real time; "
              f"MP4 {result['mp4_mb']:.1f} MB; peak RSS {peak_rss_mb():.0f} MB", flush=True)
        if not args.quick:
            variants = {"constant frame rate (every frame encoded)": {"hold_s": None},
                        "x264 ultrafast": {"preset": "ultrafast"}, "x264 veryfast": {"preset": "veryfast"},
                        "30 fps": {"fps": 30}}
            for name, video in variants.items():
                other = bench_render(plan, folder / "out", rounds, **video)
                print(f"{name}: MP4 from the mix {other['video']:.2f} s = {other['speed_video']:.1f}× real time "
                      f"({other['video_cpu']:.1f} CPU s), {other['mp4_mb']:.1f} MB", flush=True)
        print(f"peak RSS after rendering {peak_rss_mb():.0f} MB", flush=True)
        print_loudness(f"the {len(tracks)}-scene plan", plan, folder / "out")
        print_loudness("the sample library's 28 tracks", sample_library_plan(folder / "whole"), folder / "out")
        if not args.no_plan:
            run_plan(folder, rounds)
    print(f"load average at the end {os.getloadavg()[0]:.1f}; peak RSS {peak_rss_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
