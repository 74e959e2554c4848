"""Is BLIP's vision tower cheaper per photo in batches? 8 real photos through the full-size tower one at a time,
in batches of 4 and in one batch of 8, on the default backend (on this CPU: ONNX Runtime, 8-bit) and on torch
fp32; the batched features are compared with the single ones.

Each variant's wall time and CPU time (process_time, every thread of this process) per photo, medians over the
repeats, the variants alternating. CPU time is the figure to read on a shared machine: it is the work the
variant costs, which other processes' load does not change the way it changes wall time.

    python -m benchmarks.bench_vision_batch                    # 4 timed runs of each, both backends
    python -m benchmarks.bench_vision_batch --backend auto     # the default backend alone
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from benchmarks.common import full_checkpoints
from music_mood.engines import ModelChoice

PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png",
          "hubble_deep_field.jpg", "camera.png", "coins.png")
BACKENDS = {"auto": ModelChoice(), "torch": ModelChoice("fp32", "torch")}


def as_array(features) -> np.ndarray:
    return features.float().cpu().numpy() if hasattr(features, "float") else np.asarray(features)


def measure(blip, pixel_values: list[np.ndarray], repeats: int) -> dict[str, tuple[float, float]]:
    """{variant: (median wall s/photo, median CPU s/photo)}."""
    runtime, count = blip.runtime, len(pixel_values)
    batch = np.concatenate(pixel_values)
    variants = {"one at a time": lambda: [runtime.image_features(p) for p in pixel_values],
                "batches of 4": lambda: [runtime.image_features(batch[i:i + 4]) for i in range(0, count, 4)],
                f"one batch of {count}": lambda: [runtime.image_features(batch)]}
    single = np.concatenate([as_array(f) for f in variants["one at a time"]()])
    for name, variant in variants.items():  # also the warm-up
        error = float(np.abs(np.concatenate([as_array(f) for f in variant()]) - single).max())
        print(f"    {name}: max |batched - single| = {error:.2e}")
    wall = {name: [] for name in variants}
    cpu = {name: [] for name in variants}
    for _ in range(repeats):
        for name, variant in variants.items():
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            variant()
            wall[name].append((time.perf_counter() - start_wall) / count)
            cpu[name].append((time.process_time() - start_cpu) / count)
    return {name: (statistics.median(wall[name]), statistics.median(cpu[name])) for name in variants}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                     epilog="example: python -m benchmarks.bench_vision_batch --backend auto")
    parser.add_argument("--backend", choices=[*BACKENDS, "both"], default="both", help="which runtime to measure")
    parser.add_argument("--repeats", type=int, default=4, help="timed runs of each variant")
    args = parser.parse_args(argv)

    import skimage

    from music_mood.images import open_image
    from music_mood.models import load_blip

    data = Path(skimage.__file__).parent / "data"
    checkpoint = full_checkpoints()["blip"]
    for name in BACKENDS if args.backend == "both" else [args.backend]:
        blip = load_blip(checkpoint, BACKENDS[name])
        print(f"{name}: {blip.backend} {blip.precision}", flush=True)
        pixel_values = [blip.runtime.pixel_values(open_image(data / photo)) for photo in PHOTOS]
        for variant, (wall, cpu) in measure(blip, pixel_values, args.repeats).items():
            print(f"  {variant:<16} wall {wall:.3f} s/photo   CPU {cpu:.3f} s/photo", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
