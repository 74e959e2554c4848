"""CLAP on ONNX Runtime against torch, full-size checkpoint: query and window speed, fidelity, text-tower memory.

Text: a ~20-token query through torch fp32 (models.load_clap_text + query.embed_text), ORT fp32 and ORT int8.
Audio: 16 real music windows (two runs of 8) through torch fp32 with models.py's fused attention
(models.load_clap_audio + embed.embed_windows, log-mel included), ORT fp32 in runs of 8 and of 16 windows, and ORT
int8 (8-bit MatMulNBits weights) in runs of 8. Each A/B set is interleaved in one process, at 2 threads and at 1.
Memory: VmRSS / VmHWM of a new process that loads OnnxClapText and embeds three queries (no torch imported).

    python -m benchmarks.bench_onnx_clap                 # 9 text rounds, 5 audio rounds
    python -m benchmarks.bench_onnx_clap --quick         # 3 and 2
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks.common import CACHE, ROOT, full_checkpoints, interleaved, sample_tracks
from music_mood.engines import ModelChoice

QUERY = "a dog running on the beach at sunset; happy, warm, playful mood"
FIDELITY_TEXTS = (QUERY, "calm", "a city street at night in the rain; lonely, melancholic, dark mood",
                  "a birthday cake with candles on a table; festive, joyful mood",
                  "the sound of rain on a window at night " * 80)
AUDIO_WINDOWS = 16


def export_folder(checkpoint: str, kind: str, precision: str) -> Path:
    """The export of `kind` ("text" or "audio") at `precision`, made once per checkpoint file under
    benchmarks/.cache/onnx-clap/."""
    weights = Path(checkpoint) / "model.safetensors"
    stamp = hashlib.sha256(f"{Path(checkpoint).resolve()}:{weights.stat().st_mtime_ns}".encode()).hexdigest()[:12]
    folder = CACHE / "onnx-clap" / f"{stamp}-{kind}-{precision}"
    if folder.exists():
        return folder
    import transformers

    from music_mood import onnx_clap_export

    print(f"exporting the {kind} tower ({precision}) to {folder} (once)", file=sys.stderr, flush=True)
    temporary = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    processor = transformers.AutoProcessor.from_pretrained(checkpoint)
    if kind == "text":
        model = transformers.ClapTextModelWithProjection.from_pretrained(checkpoint).eval()
        onnx_clap_export.export_clap_text(model, processor, temporary, precision)
    else:
        model = transformers.ClapAudioModelWithProjection.from_pretrained(checkpoint).eval()
        onnx_clap_export.export_clap_audio(model, processor, temporary, precision)
    temporary.rename(folder)
    return folder


def median_ms(times: list[float]) -> float:
    return statistics.median(times) * 1e3


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def bench_text(checkpoint: str, folders: dict[str, Path], threads_list: list[int], repeats: int) -> None:
    import torch

    from music_mood.models import load_clap_text
    from music_mood.onnx_clap import OnnxClapText
    from music_mood.query import embed_text

    clap = load_clap_text(checkpoint, ModelChoice("fp32"))
    tokens = len(clap.processor.tokenizer(QUERY).input_ids)
    reference = embed_text(clap, list(FIDELITY_TEXTS))
    for precision, folder in folders.items():
        found = cosines(OnnxClapText.load(folder).embed_text(list(FIDELITY_TEXTS)), reference)
        print(f"text fidelity ORT {precision} vs torch fp32, {len(FIDELITY_TEXTS)} texts: min cosine "
              f"{found.min():.7f}, mean {found.mean():.7f}")
    for threads in threads_list:
        torch.set_num_threads(threads)
        runtimes = {precision: OnnxClapText.load(folder, threads=threads) for precision, folder in folders.items()}
        functions = {"torch fp32": lambda: embed_text(clap, [QUERY]),
                     **{f"ORT {p}": (lambda r=r: r.embed_text([QUERY])) for p, r in runtimes.items()}}
        times = interleaved(functions, repeats, warmup=2)
        base = median_ms(times["torch fp32"])
        print(f"text, {threads} thread(s), one {tokens}-token query, median of {repeats} interleaved rounds "
              f"(load average {os.getloadavg()[0]:.1f}):")
        for name, values in times.items():
            print(f"  {name:11s} {median_ms(values):7.1f} ms  (torch / this: {base / median_ms(values):.2f}x)")


def music_windows(sampling_rate: int, window: int) -> np.ndarray:
    from music_mood.audio import decode_audio
    from music_mood.embed import split_windows

    windows = []
    for track in sample_tracks()[::3]:
        windows.extend(split_windows(decode_audio(track, sampling_rate), window)[0][:2])
        if len(windows) >= AUDIO_WINDOWS:
            break
    return np.stack(windows[:AUDIO_WINDOWS])


def bench_audio(checkpoint: str, folders: dict[str, Path], threads_list: list[int], repeats: int) -> None:
    import torch

    from music_mood.embed import embed_windows
    from music_mood.models import load_clap_audio
    from music_mood.onnx_clap import OnnxClapAudio

    clap = load_clap_audio(checkpoint, ModelChoice("fp32"))
    extractor = clap.processor.feature_extractor
    windows = music_windows(extractor.sampling_rate, extractor.nb_max_samples)
    reference = embed_windows(clap, windows)
    for name, folder in folders.items():
        found = cosines(OnnxClapAudio.load(folder).embed_windows(windows), reference)
        print(f"audio fidelity ORT {name} vs torch fp32 (fused attention), {len(windows)} music windows: "
              f"min cosine {found.min():.7f}, mean {found.mean():.7f}")
    for threads in threads_list:
        torch.set_num_threads(threads)
        runtimes = {"ORT fp32, runs of 8": OnnxClapAudio.load(folders["fp32"], threads),
                    "ORT fp32, runs of 16": OnnxClapAudio.load(folders["fp32"], threads, windows_per_run=16),
                    "ORT int8, runs of 8": OnnxClapAudio.load(folders["int8"], threads)}
        functions = {"torch fp32, batches of 8": lambda: embed_windows(clap, windows),
                     **{name: (lambda r=r: r.embed_windows(windows)) for name, r in runtimes.items()}}
        times = interleaved(functions, repeats, warmup=1)
        base = len(windows) / statistics.median(times["torch fp32, batches of 8"])
        print(f"audio, {threads} thread(s), {len(windows)} windows (log-mel included), median of {repeats} "
              f"interleaved rounds (load average {os.getloadavg()[0]:.1f}):")
        for name, values in times.items():
            rate = len(windows) / statistics.median(values)
            print(f"  {name:25s} {rate:5.2f} windows/s  (this / torch: {rate / base:.2f}x)")


MEMORY_SCRIPT = """
import json, sys
from music_mood.onnx_clap import OnnxClapText
def status():
    with open("/proc/self/status") as f:
        return {line.split(":")[0]: int(line.split()[1]) / 1024 for line in f if line.startswith(("VmRSS", "VmHWM"))}
text = OnnxClapText.load(sys.argv[1], threads=sys.argv[2] and int(sys.argv[2]))
loaded = status()
for query in sys.argv[3:]:
    text.embed_text([query])
after = status()
print(json.dumps({"loaded": loaded, "after": after, "torch": "torch" in sys.modules,
                  "transformers": "transformers" in sys.modules}))
"""


def bench_memory(folders: dict[str, Path]) -> None:
    queries = [QUERY, FIDELITY_TEXTS[2], FIDELITY_TEXTS[3]]
    for precision, folder in folders.items():
        out = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(folder), "2", *queries], cwd=ROOT,
                             capture_output=True, text=True, check=True)
        found = json.loads(out.stdout)
        size = sum(f.stat().st_size for f in folder.iterdir()) / 1e6
        print(f"memory, new process holding OnnxClapText {precision} (export {size:.0f} MB on disk): after load "
              f"VmRSS {found['loaded']['VmRSS']:.0f} MB; after 3 queries VmRSS {found['after']['VmRSS']:.0f} MB, "
              f"VmHWM {found['after']['VmHWM']:.0f} MB; torch imported: {found['torch']}, "
              f"transformers: {found['transformers']}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                     epilog="example: python -m benchmarks.bench_onnx_clap --quick")
    parser.add_argument("--clap", default=None,
                        help="full-size CLAP checkpoint folder (default: benchmarks/.cache's, built if missing)")
    parser.add_argument("--repeats", type=int, default=9, help="interleaved rounds of the text comparison")
    parser.add_argument("--audio-repeats", type=int, default=5, help="interleaved rounds of the audio comparison")
    parser.add_argument("--threads", default="2,1", help="comma-separated thread counts to measure at")
    parser.add_argument("--quick", action="store_true", help="3 text and 2 audio rounds")
    parser.add_argument("--skip", default="", help="comma-separated parts to leave out: text, audio, memory")
    args = parser.parse_args(argv)
    checkpoint = args.clap or full_checkpoints()["clap"]
    repeats, audio_repeats = (3, 2) if args.quick else (args.repeats, args.audio_repeats)
    threads_list = [int(t) for t in args.threads.split(",")]
    skip = set(filter(None, args.skip.split(",")))
    text_folders = {p: export_folder(checkpoint, "text", p) for p in ("fp32", "int8")}
    audio_folders = {p: export_folder(checkpoint, "audio", p) for p in ("fp32", "int8")}
    print(f"checkpoint {checkpoint}; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}", flush=True)
    if "memory" not in skip:
        bench_memory(text_folders)
    if "text" not in skip:
        bench_text(checkpoint, text_folders, threads_list, repeats)
    if "audio" not in skip:
        bench_audio(checkpoint, audio_folders, threads_list, audio_repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
