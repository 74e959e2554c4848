"""Shared by the benchmarks: full-size random-weight BLIP and CLAP checkpoints, timing and memory helpers.

The checkpoints have the architecture and compute of the released ones (BlipConfig() = blip-base at 384 px,
ClapConfig() = htsat-unfused) with real, locally built processors (tests/model_factory.py), so every figure
is measured on the same work the real models do, without downloading weights. They are written once to
benchmarks/.cache/ (gitignored) and loaded through the product's own models.load_* functions.
"""
from __future__ import annotations

import os
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("MUSIC_MOOD_BENCH_CACHE") or ROOT / "benchmarks" / ".cache")
# What the product caches for these random-weight models (the mood words' grey-image baseline) stays with them,
# out of the user's ~/.cache/music-mood.
os.environ.setdefault("MUSIC_MOOD_CACHE", str(CACHE / "music-mood"))


def full_checkpoints() -> dict[str, str]:
    """Paths of the full-size BLIP and CLAP checkpoints, built on first use (a few minutes, ~1.6 GB)."""
    from tests.model_factory import build_blip_checkpoint, build_clap_checkpoint

    out = {}
    for kind, build in (("blip", build_blip_checkpoint), ("clap", build_clap_checkpoint)):
        folder = CACHE / f"{kind}-full"
        if not (folder / "config.json").exists() or not (folder / "model.safetensors").exists():
            print(f"building the full-size {kind} checkpoint in {folder} (once)", file=sys.stderr)
            build(folder.with_name(folder.name + ".tmp"), size="full")
            folder.with_name(folder.name + ".tmp").rename(folder)
        out[kind] = str(folder)
    return out


def photo() -> Path:
    """The benchmark photo: chelsea.png (a cat) from scikit-image."""
    import skimage

    return Path(skimage.__file__).parent / "data" / "chelsea.png"


def sample_tracks() -> list[Path]:
    import immich_memories_music

    return sorted(immich_memories_music.tracks_dir().glob("*/*.opus"))


def put_in_new_music(paths, tracks: list[Path]) -> None:
    """Copy sample tracks into the new_music/ of library `paths` (a LibraryPaths), each in its mood's folder, as a
    user drops them in."""
    import shutil

    for track in tracks:
        target = paths.new_music / track.parent.name / track.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(track, target)


def timed(function, repeats: int, warmup: int = 1) -> list[float]:
    """Wall seconds of `repeats` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def interleaved(functions: dict, repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Wall seconds of each function, run in turn (a, b, a, b...) so that load from other processes on a shared
    machine falls on all of them alike."""
    for function in functions.values():
        for _ in range(warmup):
            function()
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return times


def percentile(values, q: float) -> float:
    values = sorted(values)
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb(kind: str = "VmRSS") -> float:
    """This process's resident memory in MB: VmRSS (all), RssAnon (its own allocations) or RssFile (mapped files,
    such as safetensors weights, which the kernel can drop and read again)."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(kind + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")
