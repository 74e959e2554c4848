"""Resident memory of a process holding what the app holds (BLIP + CLAP's text tower): peak while loading, and after
warm-up queries. Measured in a new process per precision/backend that imports only what the product imports, so
the figures are the app's own (this script's parent builds the checkpoints with torch; the child never sees it).

    python -m benchmarks.bench_memory                               # the default precision and backend
    python -m benchmarks.bench_memory --precision fp32 --backend torch
    python -m benchmarks.bench_memory --quick                       # one warm-up query instead of three
    python -m benchmarks.bench_memory --app                         # also `python app.py` itself, as a user runs it
    python -m benchmarks.bench_memory --requests 200                # only the app: RSS over 200 new photos
    python -m benchmarks.bench_memory --gc --backend torch          # what a full collection costs, before/after freeze
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

from benchmarks.common import ROOT, full_checkpoints, photo

CHILD = """
import json, sys
from benchmarks.common import current_rss_mb, peak_rss_mb
from benchmarks.bench_query import LIBRARY_SIZE, synthetic_database
from music_mood.engines import ModelChoice
from music_mood.memory import release_freed_memory
from music_mood.models import load_blip, load_clap_text
from music_mood.recommendation import recommend

blip_dir, clap_dir, precision, backend, photo, queries = sys.argv[1:7]
base = current_rss_mb()
blip = load_blip(blip_dir, ModelChoice(precision, backend))
clap = load_clap_text(clap_dir, ModelChoice(precision, backend))
loaded, loading_peak = current_rss_mb(), peak_rss_mb()
db = synthetic_database(LIBRARY_SIZE, clap.runtime.dim)
for _ in range(int(queries)):
    recommend(blip, clap, db, image=photo)
    release_freed_memory()  # as app.py's Recommend handler does after every request
print(json.dumps({"models": [blip.embedded_by, clap.embedded_by], "base": base, "loaded": loaded,
                  "loading_peak": loading_peak, "warm": current_rss_mb(), "peak": peak_rss_mb(),
                  "anon": current_rss_mb("RssAnon"), "file": current_rss_mb("RssFile"),
                  "library_mb": db.vectors.nbytes / 2**20,
                  "torch_imported": "torch" in sys.modules, "transformers_imported": "transformers" in sys.modules}))
"""


GC_CHILD = """
import gc, json, sys, time
from music_mood.engines import ModelChoice
from music_mood.memory import freeze_loaded_objects, release_freed_memory
from music_mood.models import load_blip, load_clap_text
from music_mood.recommendation import recommend
from benchmarks.bench_query import synthetic_database

blip_dir, clap_dir, precision, backend, photo = sys.argv[1:6]
choice = ModelChoice(precision, backend)
blip, clap = load_blip(blip_dir, choice), load_clap_text(clap_dir, choice)
db = synthetic_database(1000, clap.runtime.dim)
recommend(blip, clap, db, image=photo)

def collect_s(n=5):
    times = []
    for _ in range(n):
        start = time.perf_counter()
        gc.collect()
        times.append(time.perf_counter() - start)
    return sorted(times)[n // 2]

objects, before = len(gc.get_objects()), collect_s()
freeze_loaded_objects()
after = collect_s()
start = time.perf_counter()
for _ in range(5):
    release_freed_memory()
release_s = (time.perf_counter() - start) / 5
print(json.dumps({"models": [blip.embedded_by, clap.embedded_by], "objects": objects, "before": before,
                  "after": after, "frozen": gc.get_freeze_count(), "release": release_s}))
"""


def measure_gc(checkpoints: dict, precision: str, backend: str) -> dict:
    """In a new process holding the app's models after one query: a full gc.collect()'s median seconds before and
    after freeze_loaded_objects, and what release_freed_memory costs after it."""
    done = subprocess.run([sys.executable, "-c", GC_CHILD, checkpoints["blip"], checkpoints["clap"], precision, backend,
                           str(photo())], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=1800)
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(checkpoints: dict, precision: str, backend: str, queries: int) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, checkpoints["blip"], checkpoints["clap"], precision, backend,
                           str(photo()), str(queries)], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=1800)
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def _status_mb(pid: int) -> dict[str, float]:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    return {key: int(fields[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM", "RssAnon", "RssFile")}


def measure_app(checkpoints: dict, queries: int) -> tuple[dict, dict]:
    """`python app.py` on its default backend, serving a 10 000-track library: its memory once serving with the
    models loaded, and after `queries` photo queries through its API."""
    import tempfile
    from pathlib import Path

    from gradio_client import Client, handle_file

    from benchmarks.bench_cold import make_library
    from music_mood.describe import cache_dir

    exports = cache_dir() / "onnx"  # read first: importing the tests' code points MUSIC_MOOD_CACHE at a temp folder
    from tests.app_server import running_app

    with tempfile.TemporaryDirectory(prefix="bench_memory.") as folder:
        library = make_library(Path(folder) / "library", checkpoints["clap"], 512)
        with running_app(library, checkpoints, Path(folder), exports=exports) as app:
            client = Client(app.url, verbose=False)
            client.predict(image=None, text="warm", topk=1, api_name="/recommend")  # waits for the models
            loaded = _status_mb(app.process.pid)
            for _ in range(queries):
                client.predict(image=handle_file(str(photo())), text="", topk=10, api_name="/recommend")
            return loaded, _status_mb(app.process.pid)


def distinct_photos(folder, count: int) -> list:
    """`count` copies of the benchmark photo, each with one pixel changed: a new photo to the app every time (it
    remembers the captions of photos it has seen, keyed by their pixels)."""
    from PIL import Image

    base = np.asarray(Image.open(photo()).convert("RGB")).copy()
    paths = []
    for i in range(count):
        pixels = base.copy()
        pixels[i // base.shape[1] % base.shape[0], i % base.shape[1]] ^= 0xFF
        paths.append(folder / f"photo-{i:04d}.png")
        Image.fromarray(pixels).save(paths[-1])
    return paths


def measure_app_over(checkpoints: dict, requests: int, every: int, app_args=()) -> list[tuple[int, dict, float]]:
    """`python app.py` (default backend unless app_args say otherwise; 10 000 tracks) answering `requests` new
    photos through /recommend: (requests so far, its /proc status in MB, seconds of the last request) after the
    models are loaded and then after every `every` requests."""
    import tempfile
    import time
    from pathlib import Path

    from gradio_client import Client, handle_file

    from benchmarks.bench_cold import make_library
    from music_mood.describe import cache_dir

    exports = cache_dir() / "onnx"  # read first: importing the tests' code points MUSIC_MOOD_CACHE at a temp folder
    from tests.app_server import running_app

    with tempfile.TemporaryDirectory(prefix="bench_memory.") as folder:
        photos = distinct_photos(Path(folder), requests)
        library = make_library(Path(folder) / "library", checkpoints["clap"], 512)
        with running_app(library, checkpoints, Path(folder), *app_args, exports=exports) as app:
            client = Client(app.url, verbose=False)
            client.predict(image=None, text="warm", topk=1, api_name="/recommend")  # waits for the models
            samples = [(0, _status_mb(app.process.pid), 0.0)]
            for i, path in enumerate(photos, 1):
                start = time.perf_counter()
                client.predict(image=handle_file(str(path)), text="", topk=10, api_name="/recommend")
                seconds = time.perf_counter() - start
                if i % every == 0 or i == requests:
                    samples.append((i, _status_mb(app.process.pid), seconds))
            return samples


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one warm-up query")
    parser.add_argument("--precision", default="auto", help="models' precision")
    parser.add_argument("--backend", default="auto", help="models' backend")
    parser.add_argument("--app", action="store_true", help="also measure python app.py (default backend)")
    parser.add_argument("--requests", type=int, default=0,
                        help="only python app.py: its RSS over this many new photos through /recommend, sampled "
                             "every --every requests (issue 21: it must stay flat without a collection per request)")
    parser.add_argument("--every", type=int, default=20, help="with --requests: RSS sampled every this many")
    parser.add_argument("--gc", action="store_true",
                        help="only what a full garbage collection costs with the models loaded, before and after "
                             "gc.freeze (memory.freeze_loaded_objects), and release_freed_memory after it")
    args = parser.parse_args(argv)
    checkpoints = full_checkpoints()  # built (or found) before anything is measured
    if args.gc:
        m = measure_gc(checkpoints, args.precision, args.backend)
        print(f"{' + '.join(m['models'])}: {m['objects']} objects tracked; gc.collect() {1000 * m['before']:.0f} ms "
              f"before freezing, {1000 * m['after']:.1f} ms after ({m['frozen']} frozen); release_freed_memory "
              f"{1000 * m['release']:.1f} ms; load average {os.getloadavg()[0]:.1f}")
        return 0
    if args.requests:
        app_args = () if args.backend == "auto" else ("--backend", args.backend)
        app_args += () if args.precision == "auto" else ("--precision", args.precision)
        print(f"load average before {os.getloadavg()[0]:.1f}; python app.py {' '.join(app_args)}")
        samples = measure_app_over(checkpoints, args.requests, args.every, app_args)
        for done, status, seconds in samples:
            print(f"after {done:>4} new photos: VmRSS {status['VmRSS']:.0f} MB, RssAnon {status['RssAnon']:.0f} MB, "
                  f"peak {status['VmHWM']:.0f} MB" + (f"; that request {seconds:.2f} s" if done else ""))
        after_first = [status["VmRSS"] for done, status, _ in samples if done >= args.every]
        print(f"RSS from request {args.every} to {args.requests}: {min(after_first):.0f}-{max(after_first):.0f} MB "
              f"(spread {max(after_first) - min(after_first):.0f} MB); load average after {os.getloadavg()[0]:.1f}")
        return 0
    queries = 1 if args.quick else 3
    # The first process may have to export the models (ONNX Runtime): its figures are the first start's.
    for label in ("first start (exports made if missing)", "a later start (exports cached)"):
        m = measure(checkpoints, args.precision, args.backend, queries)
        print(f"{label}, {' + '.join(m['models'])}: RSS {m['base']:.0f} MB before loading, {m['loaded']:.0f} MB "
              f"loaded (peak while loading {m['loading_peak']:.0f} MB), {m['warm']:.0f} MB after {queries} "
              f"warm-up queries ({m['library_mb']:.0f} MB library); peak {m['peak']:.0f} MB; after warm-up "
              f"RssAnon {m['anon']:.0f} MB, RssFile {m['file']:.0f} MB; torch imported: {m['torch_imported']}, "
              f"transformers imported: {m['transformers_imported']}")
    if args.app:
        loaded, warm = measure_app(checkpoints, queries)
        print(f"python app.py (default backend, 10 000 tracks): {loaded['VmRSS']:.0f} MB serving with the models "
              f"loaded (peak so far {loaded['VmHWM']:.0f} MB), {warm['VmRSS']:.0f} MB after {queries} photo queries "
              f"(RssAnon {warm['RssAnon']:.0f} MB, RssFile {warm['RssFile']:.0f} MB); peak {warm['VmHWM']:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
