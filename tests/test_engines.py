"""The engine each stage runs on, per CPU kind (engines.ENGINES), and a BLIP whose two halves run on two engines
held to the fidelity gate against torch fp32."""
from __future__ import annotations

import numpy as np
import pytest

from music_mood import engines, models
from music_mood.engines import ModelChoice
from tests.test_exports import FLAGS

STAGES = ("blip-vision", "blip-decoder", "clap-text", "clap-audio")
ONNX_INT8, TORCH_BF16 = ("onnx", "int8"), ("torch", "bf16")


@pytest.mark.parametrize("cpu, kind, expected", [
    ("avx2", "avx2", {stage: ONNX_INT8 for stage in STAGES}),
    ("avx512", "avx512", {stage: ONNX_INT8 for stage in STAGES}),
    # This session's AMD EPYC: a whole build was faster on ONNX 8-bit (7.3 s against 12.1 s with the audio tower on
    # torch bf16, whose import a build then pays), though bench_stages timed a window at 42 ms against 92.
    ("avx512_bf16", "avx512-bf16", {"blip-vision": ONNX_INT8, "blip-decoder": ONNX_INT8, "clap-text": ONNX_INT8,
                                    "clap-audio": ONNX_INT8}),
    # Issue 21's measurements on a Xeon with AMX: vision 0.29 s on torch bf16 against 0.78 s on ONNX 8-bit; a
    # decoder step 17 ms on ONNX 8-bit against 57 ms on torch bf16.
    ("amx_bf16", "amx", {"blip-vision": TORCH_BF16, "blip-decoder": ONNX_INT8, "clap-text": ONNX_INT8,
                         "clap-audio": TORCH_BF16}),
])
def test_auto_runs_each_stage_on_the_engine_measured_fastest_on_that_cpu(cpu, kind, expected):
    assert engines.cpu_kind(FLAGS[cpu]) == kind
    chosen = {stage: ModelChoice().engine(stage, flags=FLAGS[cpu], gpu=False) for stage in STAGES}
    assert chosen == expected
    # Every choice says what measured it, and the table has one row per kind and one entry per stage.
    assert set(engines.ENGINES) == set(engines.CPU_KINDS)
    assert all(set(row) == set(STAGES) and all(e.measured for e in row.values()) for row in engines.ENGINES.values())


def test_auto_needs_a_stage_and_a_known_one():
    with pytest.raises(ValueError, match="per stage"):
        ModelChoice().engine(flags=FLAGS["avx2"], gpu=False)
    with pytest.raises(ValueError, match="stage must be one of"):
        ModelChoice().engine("blip", flags=FLAGS["avx2"], gpu=False)


def _teacher_forced(runtime, pixel_values, ids):
    """Logits float32 (T, vocab) of token ids after the photo, and its image features as float32 numpy."""
    features = runtime.image_features(pixel_values)
    logits, _ = runtime.decode(ids, runtime.cross_attention(features))
    if not isinstance(features, np.ndarray):  # a torch tensor
        features = features.float().numpy()
    return logits[0], features


def test_mixed_engine_blip_is_within_the_fidelity_gate_of_fp32(checkpoints, shared_exports, photos):
    """torch's vision tower (bf16, as on AMX) feeding ONNX Runtime's 8-bit decoder: teacher-forced logits within
    0.06 of their std (RMS) of torch fp32's, and the caption pipeline runs end to end on it."""
    from image_to_vector import describe_image, open_image
    from music_mood.engines import MixedBlip

    models._loaded.cache_clear()
    mixed = models._load_mixed(checkpoints["blip"], "bf16", "int8")
    reference = models._load("BLIP", checkpoints["blip"], "blip", ModelChoice("fp32", "torch"))
    assert isinstance(mixed.runtime, MixedBlip) and mixed.embedded_by == "torch+onnx-bf16+int8"

    image = open_image(photos["rocket.jpg"])
    pixels = reference.runtime.pixel_values(image)
    np.testing.assert_allclose(mixed.runtime.pixel_values(image), pixels, atol=1e-5)
    ids = np.array([[reference.runtime.bos_token_id, *reference.runtime.encode("a picture of a rocket in the sky")]],
                   dtype=np.int64)
    fast, features = _teacher_forced(mixed.runtime, pixels, ids)
    exact, exact_features = _teacher_forced(reference.runtime, pixels, ids)
    assert features.dtype == np.float32 and features.shape == exact_features.shape
    rms = float(np.sqrt(np.mean((fast - exact) ** 2)))
    assert rms <= 0.06 * float(exact.std()), (rms, float(exact.std()), float(np.abs(fast - exact).max()))

    caption, mood_words = describe_image(mixed, image)
    assert isinstance(caption, str) and len(mood_words) >= 1


def test_mixed_engine_blip_loads_from_its_exports_without_transformers(checkpoints):
    """A cold start on the AMX row's BLIP imports torch for the vision tower, but not transformers."""
    import subprocess
    import sys

    models._load_mixed(checkpoints["blip"], "bf16", "int8")  # the exports, made once (this needs transformers)
    code = ("import sys; from music_mood import models; "
            f"blip = models._load_mixed({checkpoints['blip']!r}, 'bf16', 'int8'); "
            "print(blip.embedded_by, 'torch' in sys.modules, 'transformers' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                          cwd=str(models.__file__).rsplit("/music_mood/", 1)[0])
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["torch+onnx-bf16+int8", "True", "False"]
