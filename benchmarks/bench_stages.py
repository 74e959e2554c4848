"""Each stage on each engine, on this CPU: what engines.ENGINES's row for this CPU kind is chosen from.

Stages: BLIP's vision tower (one photo), BLIP's caption (cross-attention keys/values, then 30 greedy decoder steps,
the app's caption length), CLAP's text tower (one query), CLAP's audio tower (8 windows). Engines: torch fp32,
torch bf16, ONNX Runtime fp32, ONNX Runtime 8-bit. Within a stage the engines run in turn (a, b, c, d, a, b...), so
load from other processes falls on them alike. Full-size random-weight checkpoints (benchmarks/common.py).

Fidelity against torch fp32, the gate of README's "Backends, precision and performance": for the vision tower, its
features fed to the exact (ONNX fp32) decoder (also timed there: "export-bf16", the TorchScript of the
vision tower that a BLIP split between torch and ONNX Runtime runs); for the decoder, torch fp32's features fed to
it; both teacher-forced on the same 12 tokens, logits' RMS error over their std (gate 0.06). CLAP: the lowest
cosine of a vector to torch fp32's (gate 0.999).

    MUSIC_MOOD_BENCH_CACHE=/tmp/fullmodels python -m benchmarks.bench_stages            # 5 rounds
    MUSIC_MOOD_BENCH_CACHE=/tmp/fullmodels python -m benchmarks.bench_stages --rounds 3 --stages blip-vision
"""
from __future__ import annotations

import argparse
import gc
import os
import time

import numpy as np

from benchmarks.common import full_checkpoints, photo

ENGINES = (("torch", "fp32"), ("torch", "bf16"), ("onnx", "fp32"), ("onnx", "int8"))
STAGES = ("blip-vision", "blip-decoder", "clap-text", "clap-audio")
CAPTION_TOKENS = 30  # describe.MAX_CAPTION_TOKENS: what the app's caption runs to on random weights
FORCED_TOKENS = 12
QUERY = "a cat lying on a sofa in the sun, calm, warm, relaxed"


def _numpy(features) -> np.ndarray:
    return features if isinstance(features, np.ndarray) else features.float().cpu().numpy()


def _logits(runtime, features, ids) -> np.ndarray:
    """Teacher-forced logits float32 (T, vocab) of `ids` after the image whose features these are, on `runtime`
    (torch's runtime is given them as a tensor in its own dtype)."""
    features = _numpy(features)
    if getattr(runtime, "dtype", None) is not None:  # torch_runtime.TorchBlip
        import torch

        features = torch.from_numpy(features).to(runtime.dtype)
    return runtime.decode(ids, runtime.cross_attention(features))[0][0]


def _gate(logits: np.ndarray, exact: np.ndarray) -> float:
    return float(np.sqrt(np.mean((logits - exact) ** 2)) / exact.std())


def _timed_rounds(calls: dict, rounds: int) -> dict[str, list[float]]:
    """Seconds of each call per round, the calls in turn; one untimed warm-up round first."""
    for call in calls.values():
        call()
    times = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return times


def _report(stage: str, times: dict, unit: float, unit_name: str, fidelity: dict, gate: str) -> None:
    medians = {name: float(np.median(t)) for name, t in times.items()}
    best = min(medians.values())
    for name, median in medians.items():
        print(f"  {stage:<13} {name:<11} median {median * unit:8.1f} {unit_name}  min {min(times[name]) * unit:8.1f}  "
              f"x{median / best:.2f} of the fastest  {gate} {fidelity[name]:.5f}", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (the engines in turn in each)")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES), help="stages to measure")
    args = parser.parse_args(argv)

    import torch

    from image_to_vector import open_image
    from music_mood.describe import caption_image
    from music_mood.engines import ModelChoice, cpu_flags, cpu_kind
    from music_mood.models import _load, _load_mixed

    checkpoints = full_checkpoints()
    flags = set(cpu_flags().split())
    print(f"CPU kind {cpu_kind(cpu_flags())} (flags: "
          f"{' '.join(sorted(f for f in flags if f.startswith(('avx512', 'amx', 'avx2'))))}); {os.cpu_count()} CPUs; "
          f"torch {torch.__version__} {torch.get_num_threads()} threads; load average {os.getloadavg()[0]:.1f}; "
          f"{args.rounds} rounds", flush=True)
    names = [f"{b}-{p}" for b, p in ENGINES]

    if {"blip-vision", "blip-decoder"} & set(args.stages):
        blips = {f"{b}-{p}": _load("BLIP", checkpoints["blip"], "blip", ModelChoice(p, b)).runtime for b, p in ENGINES}
        exact_runtime, decoder_fp32 = blips["torch-fp32"], blips["onnx-fp32"]
        pixels = exact_runtime.pixel_values(open_image(photo()))
        words = exact_runtime.encode("a cat lying on a red sofa next to a window in the sun")
        ids = np.array([[exact_runtime.bos_token_id, *words]], np.int64)[:, :FORCED_TOKENS]
        exact_features = exact_runtime.image_features(pixels)
        exact = _logits(exact_runtime, exact_features, ids)
        if "blip-vision" in args.stages:
            # What a BLIP split between engines runs: the TorchScript of the vision tower, in bf16.
            vision = {**blips, "export-bf16": _load_mixed(checkpoints["blip"], "bf16", "int8").runtime.vision}
            fidelity = {name: _gate(_logits(decoder_fp32, _numpy(vision[name].image_features(pixels)), ids), exact)
                        for name in vision}
            times = _timed_rounds({name: (lambda r=vision[name]: r.image_features(pixels)) for name in vision},
                                  args.rounds)
            _report("blip-vision", times, 1000, "ms", fidelity, "logits RMS/std")
        if "blip-decoder" in args.stages:
            fidelity = {name: _gate(_logits(blips[name], exact_features, ids), exact) for name in names}
            features = {name: (exact_features.to(blips[name].dtype) if name.startswith("torch") else
                               _numpy(exact_features)) for name in names}

            def caption(name):
                class Loaded:  # caption_image reads .runtime only
                    runtime = blips[name]
                cross = blips[name].cross_attention(features[name])
                caption_image(Loaded, cross, CAPTION_TOKENS, CAPTION_TOKENS)

            times = _timed_rounds({name: (lambda n=name: caption(n)) for name in names}, args.rounds)
            _report(f"caption {CAPTION_TOKENS}", times, 1000 / CAPTION_TOKENS, "ms/step", fidelity, "logits RMS/std")
        del blips, exact_runtime, decoder_fp32
        gc.collect()

    if "clap-text" in args.stages:
        texts = {f"{b}-{p}": _load("CLAP", checkpoints["clap"], "clap-text", ModelChoice(p, b)).runtime
                 for b, p in ENGINES}
        exact = texts["torch-fp32"].embed_text([QUERY])[0]
        fidelity = {name: float(texts[name].embed_text([QUERY])[0] @ exact) for name in names}
        times = _timed_rounds({name: (lambda r=texts[name]: r.embed_text([QUERY])) for name in names},
                              max(args.rounds, 10))
        _report("clap-text", times, 1000, "ms", fidelity, "cosine")
        del texts
        gc.collect()

    if "clap-audio" in args.stages:
        audios = {f"{b}-{p}": _load("CLAP", checkpoints["clap"], "clap-audio", ModelChoice(p, b)).runtime
                  for b, p in ENGINES}
        first = audios["torch-fp32"]
        rng = np.random.default_rng(0)
        seconds = np.arange(first.window_samples) / first.sampling_rate
        # 8 windows of tones over noise: something with a spectrum, as music has.
        windows = np.stack([0.3 * np.sin(2 * np.pi * (110 * (i + 1)) * seconds) +
                            0.05 * rng.standard_normal(first.window_samples) for i in range(8)]).astype(np.float32)
        exact = first.embed_windows(windows)
        fidelity = {name: float(np.min(np.sum(audios[name].embed_windows(windows) * exact, axis=1))) for name in names}
        times = _timed_rounds({name: (lambda r=audios[name]: r.embed_windows(windows)) for name in names},
                              args.rounds)
        _report("clap-audio 8", times, 1000 / len(windows), "ms/window", fidelity, "min cosine")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
