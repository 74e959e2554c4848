"""BLIP on ONNX Runtime against torch, on the full-size random-weight checkpoint: speed, fidelity, memory.

Measured A/B interleaved in one process, medians, with 2 threads and with 1:
- the vision tower on one photo: torch fp32 (the product's loader, fused attention) vs ORT fp32;
- one decoder step (T=1 after a past of PAST_LENGTH tokens, cross-attention cached as describe.py's caption loop
  does) on torch fp32 vs ORT fp32 vs ORT int8, the chosen MatMulNBits settings and the alternatives they were
  chosen over;
- teacher-forced fidelity on FIDELITY_TOKENS tokens against torch fp32: max and RMS logit error over the logits'
  std, relative error of the last hidden state, agreement of the argmax token;
- the memory of a loaded OnnxBlip (int8: 8-bit weights) in a fresh process, after loading and after one
  photo's vision pass, cross-attention and 12 decode steps.

The checkpoint's vision tower is first given realistic weight scales (Linear/Conv weights N(0, 0.02), biases 0,
LayerNorms 1/0, seed 0), so its features depend on the photo; nothing else is changed.

    python -m benchmarks.bench_onnx_blip                 # 20 timed runs of each
    python -m benchmarks.bench_onnx_blip --quick         # 5 timed runs of each
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np

from benchmarks.common import ROOT, full_checkpoints, interleaved, photo
from music_mood.engines import ModelChoice

PAST_LENGTH = 10
FIDELITY_TOKENS = 12
# (name, MatMulNBits settings) of the int8 exports compared; the first is export_blip's default.
INT8_VARIANTS = {
    "int8 b32 sym acc4": dict(block_size=32, symmetric=True, accuracy_level=4),
    "int8 b128 sym acc4": dict(block_size=128, symmetric=True, accuracy_level=4),
    "int8 b32 asym acc4": dict(block_size=32, symmetric=False, accuracy_level=4),
    "int8 b32 sym acc0": dict(block_size=32, symmetric=True, accuracy_level=0),
}


def realistic_vision_weights(vision_model, seed: int = 0) -> None:
    """Give the vision tower weights of realistic scale (the random checkpoint's may make it ignore the photo)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in vision_model.modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * 0.02)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, torch.nn.LayerNorm):
                module.weight.fill_(1.0)
                module.bias.zero_()


def teacher_ids(blip) -> np.ndarray:
    """bos + FIDELITY_TOKENS - 1 caption tokens: int64 (1, FIDELITY_TOKENS)."""
    words = blip.encode("a photo of a cat sitting on a couch with a remote control next to it")
    return np.array([[blip.bos_token_id, *words[:FIDELITY_TOKENS - 1]]], np.int64)


def fidelity(onnx_blip, cross, ids, expected_logits, expected_hidden) -> dict:
    logits, _ = onnx_blip.decode(ids, cross)
    hidden = onnx_blip.last_hidden_state(ids, cross)
    error, std = logits - expected_logits, expected_logits.std()
    return {"max_err/std": float(np.abs(error).max() / std), "rms_err/std": float(np.sqrt((error ** 2).mean()) / std),
            "hidden_rel": float(np.linalg.norm(hidden - expected_hidden) / np.linalg.norm(expected_hidden)),
            "top1_agree": float((logits.argmax(-1) == expected_logits.argmax(-1)).mean())}


def fresh_process_memory(folder: Path, threads: int) -> dict:
    """VmRSS / VmHWM in MB of a new process that loads OnnxBlip from `folder` and describes one photo."""
    script = textwrap.dedent(f"""
        import json, sys
        import numpy as np
        from PIL import Image
        from music_mood.onnx_blip import OnnxBlip

        def status():
            fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
            return {{key: int(fields[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM")}}

        before = status()
        blip = OnnxBlip.load({str(folder)!r}, threads={threads})
        loaded = status()
        cross = blip.cross_attention(blip.image_features(blip.pixel_values(Image.open({str(photo())!r}))))
        ids, past = np.array([[blip.bos_token_id]]), None
        for _ in range(12):
            logits, past = blip.decode(ids, cross, past)
            ids = logits[:, -1:].argmax(-1)
        ran = status()
        assert "torch" not in sys.modules and "transformers" not in sys.modules
        print(json.dumps({{"python+imports": before, "loaded": loaded, "after one photo": ran}}))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(result.stdout)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                     epilog="example: python -m benchmarks.bench_onnx_blip --quick")
    parser.add_argument("--checkpoint", default=None,
                        help="full-size BLIP checkpoint folder (default: benchmarks.common.full_checkpoints())")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs of each contender")
    parser.add_argument("--quick", action="store_true", help="5 timed runs of each")
    args = parser.parse_args(argv)
    repeats = 5 if args.quick else args.repeats

    from music_mood.models import load_blip

    args.checkpoint = args.checkpoint or full_checkpoints()["blip"]
    blip = load_blip(args.checkpoint, ModelChoice("fp32"))
    model, processor = blip.model, blip.processor
    realistic_vision_weights(model.vision_model)
    work = Path(tempfile.mkdtemp(prefix="bench-onnx-blip-"))  # ~2.7 GB of exports, removed at the end
    try:
        return _measure(args.checkpoint, repeats, model, processor, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _measure(checkpoint: str, repeats: int, model, processor, work: Path) -> int:
    import torch
    from PIL import Image
    from transformers import DynamicCache, EncoderDecoderCache

    from music_mood.onnx_blip import OnnxBlip
    from music_mood.onnx_blip_export import export_blip

    folders = {"ORT fp32": work / "fp32"}
    folders.update({name: work / name.replace(" ", "-") for name in INT8_VARIANTS})
    for name, folder in folders.items():
        folder.mkdir()
        print(f"exporting {name} ...", file=sys.stderr)
        if name in INT8_VARIANTS:
            export_blip(model, processor, folder, "int8", **INT8_VARIANTS[name])
        else:
            export_blip(model, processor, folder, "fp32")
    sizes = {name: sum(f.stat().st_size for f in folder.glob("*.onnx")) / 2 ** 20 for name, folder in folders.items()}

    image = Image.open(photo()).convert("RGB")
    pixel_values = processor(images=image, return_tensors="pt").pixel_values
    decoder = model.text_decoder
    with torch.inference_mode():
        image_embeds = model.vision_model(pixel_values=pixel_values)[0]
        probe = OnnxBlip.load(folders["ORT fp32"], threads=2)
        ids = teacher_ids(probe)
        out = decoder(input_ids=torch.from_numpy(ids), encoder_hidden_states=image_embeds, output_hidden_states=True)
        expected_logits, expected_hidden = out.logits.numpy(), out.hidden_states[-1].numpy()
        # The photo must matter to the features, or the vision timings measure a degenerate model.
        grey = model.vision_model(pixel_values=torch.zeros_like(pixel_values))[0]
        photo_vs_grey = float((image_embeds - grey).norm() / image_embeds.norm())
    del probe

    rows, fidelities = [], {}
    prefix = ids[:, :PAST_LENGTH]
    step = ids[:, PAST_LENGTH:PAST_LENGTH + 1]
    for threads in (2, 1):
        torch.set_num_threads(threads)
        runtimes = {name: OnnxBlip.load(folder, threads=threads) for name, folder in folders.items()}
        crosses = {name: rt.cross_attention(image_embeds.numpy()) for name, rt in runtimes.items()}
        pasts = {name: rt.decode(prefix, crosses[name])[1] for name, rt in runtimes.items()}
        if threads == 2:
            fidelities = {name: fidelity(rt, crosses[name], ids, expected_logits, expected_hidden)
                          for name, rt in runtimes.items()}
            # End to end: each export's own vision tower gives the features its decoder attends to.
            fidelities.update({f"{name}, own vision": fidelity(
                rt, rt.cross_attention(rt.image_features(pixel_values.numpy())), ids, expected_logits,
                expected_hidden) for name, rt in runtimes.items()})
            feats = runtimes["ORT fp32"].image_features(pixel_values.numpy())
            fidelities["vision ORT fp32 max abs err"] = float(np.abs(feats - image_embeds.numpy()).max())
            fidelities["pixel_values max abs err"] = float(
                np.abs(runtimes["ORT fp32"].pixel_values(image) - pixel_values.numpy()).max())

        with torch.inference_mode():
            cache = EncoderDecoderCache(DynamicCache(), DynamicCache())  # as TorchBlip.decode's
            decoder(input_ids=torch.from_numpy(prefix), encoder_hidden_states=image_embeds, cache=cache,
                    use_cache=True)
            torch_step = torch.from_numpy(step)

            def torch_decoder_step():
                decoder(input_ids=torch_step, encoder_hidden_states=image_embeds, cache=cache, use_cache=True,
                        logits_to_keep=1)
                cache.self_attention_cache.crop(-1)  # back to the same past for the next run

            vision = interleaved({
                "torch fp32": lambda: model.vision_model(pixel_values=pixel_values),
                "ORT fp32": lambda ort=runtimes["ORT fp32"]: ort.image_features(pixel_values.numpy()),
            }, max(3, repeats // 2))
            steps = interleaved({
                "torch fp32": torch_decoder_step,
                **{name: (lambda rt=rt, cross=crosses[name], past=pasts[name]: rt.decode(step, cross, past))
                   for name, rt in runtimes.items()},
            }, repeats * 2)
        for name, times in vision.items():
            rows.append(("vision tower", threads, name, statistics.median(times),
                         statistics.median(vision["torch fp32"]) / statistics.median(times)))
        for name, times in steps.items():
            rows.append((f"decoder step (past {PAST_LENGTH})", threads, name, statistics.median(times),
                         statistics.median(steps["torch fp32"]) / statistics.median(times)))
        runtimes = crosses = pasts = vision = steps = None  # this thread count's sessions, freed before the next

    print(f"checkpoint {checkpoint}; photo {photo().name}; {repeats} runs (decoder steps {repeats * 2}, "
          f"vision {max(3, repeats // 2)}); vision features photo-vs-grey relative difference {photo_vs_grey:.3f}")
    print(f"\n{'what':28} {'threads':>7} {'contender':20} {'median ms':>10} {'torch/this':>10}")
    for what, threads, name, median, ratio in rows:
        print(f"{what:28} {threads:>7} {name:20} {median * 1e3:>10.2f} {ratio:>10.2f}")
    print(f"\nteacher-forced fidelity on {FIDELITY_TOKENS} tokens vs torch fp32 (ORT, 2 threads):")
    print("(rows 'own vision': the export's own vision tower made the features; else torch's did)")
    print(f"{'contender':32} {'max err/std':>11} {'rms err/std':>11} {'hidden rel':>10} {'top-1 agree':>11} "
          f"{'.onnx MB':>9}")
    for name in [name for folder in folders for name in (folder, f"{folder}, own vision")]:
        f = fidelities[name]
        size = sizes.get(name)
        print(f"{name:32} {f['max_err/std']:>11.4f} {f['rms_err/std']:>11.4f} {f['hidden_rel']:>10.4f} "
              f"{f['top1_agree']:>11.3f} {'' if size is None else f'{size:.0f}':>9}")
    print(f"vision ORT fp32 max abs error {fidelities['vision ORT fp32 max abs err']:.2e}; "
          f"pixel_values max abs error {fidelities['pixel_values max abs err']:.2e}")

    default = next(iter(INT8_VARIANTS))
    for threads in (2, 1):
        memory = fresh_process_memory(folders[default], threads)
        print(f"\nfresh process, OnnxBlip {default} (8-bit weights), threads={threads} (MB): "
              + "; ".join(f"{when}: VmRSS {m['VmRSS']:.0f}, VmHWM {m['VmHWM']:.0f}" for when, m in memory.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
