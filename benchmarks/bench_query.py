"""Warm latency of one photo query against a 10 000-track library: the seed's pipeline against the product's.

(a) seed-equivalent: fp32; BLIP generate() on the photo, then the full ClapModel's get_text_features on the
    caption plus a fixed mood suffix, then a full argsort of the scores.
(b) the product's default: recommend() with models from models.load_blip / load_clap_text at their default
    precision and backend (on a CPU without native bf16: ONNX Runtime, BLIP's text decoder and CLAP's text tower
    with 8-bit weights) — caption, mood words chosen by BLIP likelihoods, CLAP text tower, ranking.
Both generate exactly 12 caption tokens, so random weights do not make either stop early. (b) forgets the
captions it remembers before every run, so each run does the whole work, as for a new photo. Also printed: the
cosine between the default path's query vector and the fp32 one for the same text, and (c), the same photo asked
again with another top-k (the app's re-query: the caption and mood words are remembered). Last, where the time
of a new photo goes, stage by stage, on torch fp32 and on the default backend (stages alternate between them).

    python -m benchmarks.bench_query            # 20 timed runs of each
    python -m benchmarks.bench_query --quick    # 5 timed runs of each

--app times what a user waits for instead: `python app.py` started as a user starts it (its default engines, or
--backend/--precision), /recommend called through gradio_client on 6 distinct camera-size JPEGs (scikit-image's
photos upscaled to 1920x2880; each round changes a block of pixels, so every request is a new photo to the app),
its caption as long as the app makes it; interleaved with the seed pipeline generating as many tokens as the app's
caption has, on the same JPEG. It logs the load average and the CPU time used outside its own processes
(/proc/stat minus this process and the app's), and refuses to report a run where that passed 10 %. Then the
in-process 12-token comparison above, 5 runs, as a second line.

    python -m benchmarks.bench_query --app --rounds 3
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from benchmarks.common import full_checkpoints, interleaved, peak_rss_mb, percentile, photo
from music_mood.engines import ModelChoice

CAPTION_TOKENS = 12
SEED_SUFFIX = ", calm mood"
LIBRARY_SIZE = 10_000


def synthetic_database(n: int, dim: int):
    """n random unit vectors, each a track whose (empty) file exists, as recommend() skips tracks whose file is gone."""
    import tempfile

    from music_mood.database import Database

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    root = Path(tempfile.mkdtemp(prefix="bench-library-"))
    (root / "processed_music").mkdir()
    tracks = [{"file_path": f"processed_music/{i}.opus", "title": f"track {i}", "mood": "calm"} for i in range(n)]
    for track in tracks:
        (root / track["file_path"]).touch()
    return Database(vectors=vectors, tracks=tracks, root=root)


def seed_pipeline(checkpoints: dict, db):
    """The seed's query path, rebuilt: returns a function (photo, caption tokens) → top-10 rows."""
    import torch
    from PIL import Image
    from transformers import BlipForConditionalGeneration, BlipProcessor, ClapModel, ClapProcessor

    blip_processor = BlipProcessor.from_pretrained(checkpoints["blip"])
    blip = BlipForConditionalGeneration.from_pretrained(checkpoints["blip"], dtype=torch.float32).eval()
    clap_processor = ClapProcessor.from_pretrained(checkpoints["clap"])
    clap = ClapModel.from_pretrained(checkpoints["clap"], dtype=torch.float32).eval()

    def query(path, tokens: int = CAPTION_TOKENS):
        with torch.inference_mode():
            image = Image.open(path).convert("RGB")
            inputs = blip_processor(images=image, return_tensors="pt")
            out = blip.generate(**inputs, min_new_tokens=tokens, max_new_tokens=tokens)
            caption = blip_processor.decode(out[0], skip_special_tokens=True)
            tokens = clap_processor.tokenizer([caption + SEED_SUFFIX], return_tensors="pt", padding=True)
            vector = clap.get_text_features(**tokens).pooler_output[0].numpy()
            scores = db.vectors @ vector
            return np.argsort(-scores)[:10]

    return query


def stage_times(blip, clap, db, image_path) -> dict[str, float]:
    """Seconds per stage of a new photo's query through the runtime interface the product uses."""
    import time

    from image_to_vector import caption_image, choose_mood_words, compose_query_text, embed_text, open_image
    from music_mood.search import rank_tracks

    runtime, image, marks = blip.runtime, open_image(image_path), [time.perf_counter()]
    features = runtime.image_features(runtime.pixel_values(image))
    marks.append(time.perf_counter())
    cross = runtime.cross_attention(features)  # torch computes it inside the first decoder step
    caption = caption_image(blip, cross, CAPTION_TOKENS, CAPTION_TOKENS)
    marks.append(time.perf_counter())
    mood_words = choose_mood_words(blip, cross)
    marks.append(time.perf_counter())
    vector = embed_text(clap, [compose_query_text(caption, mood_words)])[0]
    marks.append(time.perf_counter())
    rank_tracks(db, vector, 10)
    marks.append(time.perf_counter())
    names = ("vision", f"caption({CAPTION_TOKENS} steps+cross-attn)", "mood words", "CLAP text", "search")
    return {name: marks[i + 1] - marks[i] for i, name in enumerate(names)}


APP_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
              "hubble_deep_field.jpg")
CAMERA_SIZE = (1920, 2880)  # width, height: a phone camera's portrait photo
OUTSIDE_LIMIT = 0.10


def camera_jpegs(folder: Path, round_: int) -> list[Path]:
    """scikit-image's colour photos upscaled to CAMERA_SIZE and saved as JPEG (quality 90), a 16x16 block of each
    set to round_'s grey so that no two rounds give the app the same pixels."""
    from PIL import Image

    paths = []
    for name in APP_PHOTOS:
        image = Image.open(photo().parent / name).convert("RGB").resize(CAMERA_SIZE, Image.Resampling.BICUBIC)
        image.paste((round_ * 37 % 256,) * 3, (0, 0, 16, 16))
        paths.append(folder / f"{Path(name).stem}-{round_}.jpg")
        image.save(paths[-1], quality=90)
    return paths


def _busy_and_total() -> tuple[int, int]:
    """(busy, total) CPU jiffies of the whole machine so far, all CPUs (/proc/stat)."""
    with open("/proc/stat", encoding="ascii") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values[:8]) - idle, sum(values[:8])


def _own_jiffies(pids) -> int:
    """utime + stime (and those of waited-for children) of these processes, in jiffies."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += sum(int(v) for v in fields[11:15])
        except FileNotFoundError:
            pass
    return total


class OutsideUse:
    """The share of the machine's CPU time used by processes other than `pids` since start(): what other work
    took while this benchmark ran, as a fraction of all CPUs' time."""

    def __init__(self, pids):
        self.pids = list(pids)

    def start(self):
        self.busy, self.total = _busy_and_total()
        self.own = _own_jiffies(self.pids)
        return self

    def fraction(self) -> float:
        busy, total = _busy_and_total()
        own = _own_jiffies(self.pids) - self.own
        return max(0.0, (busy - self.busy - own) / max(1, total - self.total))


def token_count(tokenizer, caption: str) -> int:
    """How many tokens the app generated for `caption`: its text tokenized again, which can split a decoded word
    into more pieces than were generated, so never more than the app's limit."""
    from music_mood.describe import MAX_CAPTION_TOKENS

    return min(MAX_CAPTION_TOKENS, len(tokenizer(caption, add_special_tokens=False).input_ids))


def bench_app(checkpoints: dict, rounds: int, app_args: tuple[str, ...]) -> int:
    """The app-level comparison (see --app); returns the exit code: 1 when the run is refused."""
    import tempfile
    import time

    from gradio_client import Client, handle_file

    from benchmarks.bench_cold import make_library
    from benchmarks.bench_memory import _status_mb
    from music_mood.describe import cache_dir

    # Importing the tests' code points MUSIC_MOOD_CACHE at an empty temp folder: the exports are found first, and
    # the variable put back for the in-process figures that follow.
    cache = os.environ.get("MUSIC_MOOD_CACHE")
    exports = cache_dir() / "onnx"
    from tests.app_server import running_app

    if cache is not None:
        os.environ["MUSIC_MOOD_CACHE"] = cache

    with tempfile.TemporaryDirectory(prefix="bench_query_app.") as folder:
        folder = Path(folder)
        library = make_library(folder / "library", checkpoints["clap"], 512)
        db = synthetic_database(LIBRARY_SIZE, 512)
        seed = seed_pipeline(checkpoints, db)
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(checkpoints["blip"])
        photos = [camera_jpegs(folder, r) for r in range(rounds + 1)]  # round 0 warms up both
        with running_app(library, checkpoints, folder, *app_args, exports=exports) as app:
            client = Client(app.url, verbose=False)
            client.predict(image=None, text="warm", topk=1, api_name="/recommend")  # waits for the models
            loaded = _status_mb(app.process.pid)
            print(f"load average {os.getloadavg()[0]:.1f}; python app.py {' '.join(app_args)}: serving with the "
                  f"models loaded, RSS {loaded['VmRSS']:.0f} MB", flush=True)
            outside = OutsideUse([os.getpid(), app.process.pid]).start()
            times = {"app": [], "seed": []}
            lengths = []
            for round_, jpegs in enumerate(photos):
                for path in jpegs:
                    start = time.perf_counter()
                    answer = client.predict(image=handle_file(str(path)), text="", topk=10, api_name="/recommend")
                    app_s = time.perf_counter() - start
                    tokens = token_count(tokenizer, answer["caption"])
                    start = time.perf_counter()
                    seed(path, tokens)
                    seed_s = time.perf_counter() - start
                    if round_:
                        times["app"].append(app_s)
                        times["seed"].append(seed_s)
                        lengths.append(tokens)
                    print(f"  round {round_} {path.name}: app {app_s:.2f} s, seed {seed_s:.2f} s, {tokens} tokens",
                          file=sys.stderr, flush=True)
            share = outside.fraction()
            peak = _status_mb(app.process.pid)["VmHWM"]
    print(f"outside CPU use {100 * share:.1f} % of both CPUs; load average at the end {os.getloadavg()[0]:.1f}")
    if share > OUTSIDE_LIMIT:
        print(f"refused: other processes used {100 * share:.1f} % of the CPU (limit {100 * OUTSIDE_LIMIT:.0f} %); "
              f"run again on a quieter machine", file=sys.stderr)
        return 1
    app_p50, seed_p50 = percentile(times["app"], 50), percentile(times["seed"], 50)
    print(f"new camera JPEG through the app: p50 {app_p50:.2f} s (min {min(times['app']):.2f}), seed {seed_p50:.2f} s "
          f"(min {min(times['seed']):.2f}) at the app's caption length ({min(lengths)}-{max(lengths)} tokens); "
          f"{seed_p50 / app_p50:.2f}x the seed; app peak RSS {peak:.0f} MB; {len(times['app'])} photos "
          f"({len(APP_PHOTOS)} distinct, {rounds} rounds, interleaved)")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5 timed runs instead of --repeats")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs of each path")
    parser.add_argument("--precision", default=None,
                        help="the product path's precision (default: the product's own default)")
    parser.add_argument("--backend", default=None, help="the product path's backend (default: the product's own)")
    parser.add_argument("--app", action="store_true",
                        help="time /recommend of python app.py on camera JPEGs against the seed (see above)")
    parser.add_argument("--rounds", type=int, default=3, help="with --app: rounds of the 6 photos")
    args = parser.parse_args(argv)
    repeats = 5 if args.quick else args.repeats
    if args.app:
        app_args = (("--backend", args.backend) if args.backend else ()) + \
            (("--precision", args.precision) if args.precision else ())
        code = bench_app(full_checkpoints(), args.rounds, app_args)
        if code:
            return code
        repeats = 5  # the in-process 12-token figure, as the second line

    import torch

    from image_to_vector import embed_text, forget_descriptions
    from music_mood.engines import default_backend, default_precision
    from music_mood.models import load_blip, load_clap_text
    from music_mood.recommendation import recommend

    checkpoints = full_checkpoints()
    choice = ModelChoice(args.precision or default_precision(), args.backend or default_backend())
    blip = load_blip(checkpoints["blip"], choice)
    clap = load_clap_text(checkpoints["clap"], choice)
    blip_fp32 = load_blip(checkpoints["blip"], ModelChoice("fp32", "torch"))
    clap_fp32 = load_clap_text(checkpoints["clap"], ModelChoice("fp32", "torch"))
    db = synthetic_database(LIBRARY_SIZE, clap.runtime.dim)
    image = photo()
    print(f"load average {os.getloadavg()[0]:.1f}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{LIBRARY_SIZE} tracks; photo {image.name}; {CAPTION_TOKENS} caption tokens; product --precision "
          f"{choice.precision} --backend {choice.backend} -> {blip.embedded_by} (BLIP), {clap.embedded_by} (CLAP)")

    seed = seed_pipeline(checkpoints, db)

    # Force the caption length for the product path the same way (its default stops at 30 tokens or [SEP]).
    length = {"max_caption_tokens": CAPTION_TOKENS, "min_caption_tokens": CAPTION_TOKENS}

    def new_photo():
        forget_descriptions(blip)
        return recommend(blip, clap, db, image=image, **length)

    times = interleaved({"seed": lambda: seed(image), "fast": new_photo}, repeats)
    rec = new_photo()
    again = interleaved({"again": lambda: recommend(blip, clap, db, image=image, topk=5, **length)},
                        repeats)["again"]
    seed_times, fast_times = times["seed"], times["fast"]

    fast_vector = embed_text(clap, [rec.query_text])[0]
    fp32_vector = embed_text(clap_fp32, [rec.query_text])[0]
    cosine = float(fast_vector @ fp32_vector)
    seed_p50, fast_p50 = percentile(seed_times, 50), percentile(fast_times, 50)
    for label, t in (("(a) seed-equivalent", seed_times), (f"(b) product {blip.embedded_by:<10}", fast_times)):
        print(f"{label}  p50 {percentile(t, 50):.3f} s  p95 {percentile(t, 95):.3f} s  min {min(t):.3f} s  "
              f"({repeats} runs, interleaved)")
    print(f"(c) the same photo again, top-k 5  p50 {percentile(again, 50):.3f} s  p95 {percentile(again, 95):.3f} s  "
          f"(caption and mood words remembered; not a new photo)")
    print(f"speed-up (a)/(b) at p50: {seed_p50 / fast_p50:.2f}x; at min: {min(seed_times) / min(fast_times):.2f}x")
    print(f"cosine(default-path vector, fp32 vector) for the same text: {cosine:.5f}")
    print(f"query text: {rec.query_text!r}")
    contenders = {"torch-fp32": (blip_fp32, clap_fp32), blip.embedded_by: (blip, clap)}
    stages = {name: [] for name in contenders}
    for round_ in range(1 + max(3, repeats // 2)):  # alternating; the first round warms up and is not kept
        for name, (b, c) in contenders.items():
            times = stage_times(b, c, db, image)
            if round_:
                stages[name].append(times)
    print("where a new photo's time goes (median seconds per stage):")
    for name, runs in stages.items():
        medians = {stage: float(np.median([run[stage] for run in runs])) for stage in runs[0]}
        print(f"  {name:<12} " + "  ".join(f"{stage} {t:.3f}" for stage, t in medians.items())
              + f"  total {sum(medians.values()):.3f}")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    print(f"peak RSS of this process (both pipelines + 3 text towers): {peak_rss_mb():.0f} MB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
