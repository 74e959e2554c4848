"""Cold start: wall time and peak RSS of `python recommend.py photo.jpg --json` in a new process, against the seed's
query script (benchmarks/seed_cold.py) on the same full-size models, photo and 10 000-track library.

(b) is the product's default (on a CPU without native bf16: ONNX Runtime from the cached exports, which imports
neither torch nor transformers); (c) is the product on torch fp32 (`--backend torch --precision fp32`).

    python -m benchmarks.bench_cold            # 3 runs of each, interleaved
    python -m benchmarks.bench_cold --quick    # 1 run of each
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

from benchmarks.common import ROOT, full_checkpoints, percentile, photo

LIBRARY_SIZE = 10_000


def make_library(folder: Path, clap_model: str, dim: int) -> Path:
    from music_mood.database import Database
    from music_mood.library import LibraryPaths, save_database

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((LIBRARY_SIZE, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    tracks = [{"file_path": f"processed_music/{i}.opus", "title": f"track {i}", "mood": "calm"}
              for i in range(LIBRARY_SIZE)]
    (folder / "processed_music").mkdir(parents=True, exist_ok=True)
    for track in tracks:  # empty files: recommend.py leaves out tracks whose file is gone
        (folder / track["file_path"]).touch()
    save_database(Database(vectors=vectors, tracks=tracks, segments=np.zeros((0, dim), np.float32),
                           clap_model=clap_model), LibraryPaths.at(folder), 48_000)
    return folder


def run(command: list[str], env: dict | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one process, which must succeed."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, cwd=ROOT,
                                   env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})
        _, status, usage = os.wait4(process.pid, 0)  # reaps it, with its own rusage
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"{command} failed: {err.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss / 1024


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 run of each instead of --repeats")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each command")
    parser.add_argument("--backend", default=None, help="(b)'s --backend (default: the product's default)")
    parser.add_argument("--precision", default=None, help="(b)'s --precision (default: the product's default)")
    args = parser.parse_args(argv)
    repeats = 1 if args.quick else args.repeats
    checkpoints = full_checkpoints()
    from PIL import Image

    with tempfile.TemporaryDirectory(prefix="bench_cold.") as folder:
        folder = Path(folder)
        jpg = folder / "photo.jpg"
        Image.open(photo()).convert("RGB").save(jpg, quality=95)
        library = make_library(folder / "library", checkpoints["clap"], 512)
        product = [sys.executable, str(ROOT / "recommend.py"), str(jpg), "--json", "--library", str(library),
                   "--blip-model", checkpoints["blip"], "--clap-model", checkpoints["clap"]]
        seed = [sys.executable, str(ROOT / "benchmarks" / "seed_cold.py"), str(jpg), checkpoints["blip"],
                checkpoints["clap"], str(library)]
        torch_fp32 = [*product, "--backend", "torch", "--precision", "fp32"]
        product += [*(["--backend", args.backend] if args.backend else []),
                    *(["--precision", args.precision] if args.precision else [])]
        # The first run fills the page cache with the weights for both ("cold" is a new process, not a cold disk)
        # and, for the product, its caches: the ONNX exports (made once per checkpoint) and the mood words'
        # grey-image baseline, as a user's first query does. Its time is printed, not counted.
        cache = {"MUSIC_MOOD_CACHE": str(folder / "cache")}
        first_wall, first_rss = run(product, cache)
        run(torch_fp32, cache)
        run(seed)
        print(f"load average {os.getloadavg()[0]:.1f}; {LIBRARY_SIZE} tracks; {repeats} runs each, interleaved")
        commands = {"seed": seed, "product": product, "torch": torch_fp32}
        results = {name: [] for name in commands}
        for _ in range(repeats):
            for name, command in commands.items():
                results[name].append(run(command, cache))
    for name, label in (("seed", "(a) seed-equivalent cold script"), ("product", "(b) recommend.py IMAGE --json"),
                        ("torch", "(c) ... --backend torch --precision fp32")):
        walls, rss = [w for w, _ in results[name]], [r for _, r in results[name]]
        print(f"{label:<42} p50 {percentile(walls, 50):.2f} s  min {min(walls):.2f} s  peak RSS {max(rss):.0f} MB")
    print(f"(b) its first run, untimed above, which exported the models and cached the grey-image baseline: "
          f"{first_wall:.2f} s, peak RSS {first_rss:.0f} MB")
    seed_p50 = percentile([w for w, _ in results["seed"]], 50)
    print(f"product / seed at p50: {percentile([w for w, _ in results['product']], 50) / seed_p50:.2f}; "
          f"torch fp32 / seed: {percentile([w for w, _ in results['torch']], 50) / seed_p50:.2f}")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
