"""Which engine runs each stage (BLIP's vision tower, BLIP's text decoder, CLAP's text and audio towers): the
user's choice (ModelChoice: --precision and --backend, checked once), the table of what is fastest on each kind
of CPU, each entry with the measurement that chose it; and the BLIP whose two halves run on two engines (vision on
torch, decoder on ONNX Runtime) when the table says so.

Nothing here imports transformers, nor torch but to ask torch for a GPU when the user chose torch without one:
a cold start reads the table, then loads only the engines it names.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import numpy as np

PRECISION_ENV = "MUSIC_MOOD_PRECISION"
BACKEND_ENV = "MUSIC_MOOD_BACKEND"
PRECISIONS = ("auto", "fp32", "bf16", "int8")
BACKENDS = ("auto", "torch", "onnx")
STAGES = ("blip-vision", "blip-decoder", "clap-text", "clap-audio")
CPU_KINDS = ("avx2", "avx512", "avx512-bf16", "amx")


@dataclass(frozen=True)
class Engine:
    """An engine and precision for one stage, and the measurement that chose it (benchmarks/RESULTS.md)."""

    backend: str  # "torch" or "onnx"
    precision: str  # torch: "fp32" or "bf16"; onnx: "fp32" or "int8"
    measured: str


_ONNX_INT8 = "onnx", "int8"
# The fastest engine within the fidelity gate per stage and CPU kind, all on 2 cores with full-size BLIP-base and
# CLAP-htsat-unfused. "Not measured" says where a row repeats another's choice without a measurement of its own.
ENGINES: dict[str, dict[str, Engine]] = {
    "avx2": {  # Intel Xeon, avx2 fma f16c, no avx512: torch has only fp32 there
        "blip-vision": Engine(*_ONNX_INT8, "not measured per engine on AVX2; ONNX Runtime as round 2 chose for "
                                           "every CPU without AMX"),
        "blip-decoder": Engine(*_ONNX_INT8, "AVX2, bench_onnx_blip: 8-bit step 18 ms (onnx_blip_export.INT8_*); torch "
                                            "fp32 57 ms on AVX-512 (round 2)"),
        "clap-text": Engine(*_ONNX_INT8, "not measured on AVX2; ONNX Runtime as round 2 chose"),
        "clap-audio": Engine(*_ONNX_INT8, "not measured on AVX2; ONNX Runtime as round 2 chose"),
    },
    "avx512": {  # AVX-512 without BF16 (Skylake/Cascade Lake Xeon): no such machine seen yet
        stage: Engine(*_ONNX_INT8, "not measured (no such CPU seen); the AVX2 choice") for stage in STAGES
    },
    "avx512-bf16": {  # AMD EPYC (Zen 4), avx512_bf16, no AMX: bench_stages 2026-12-04, load 4-7 (RESULTS.md)
        "blip-vision": Engine(*_ONNX_INT8, "bench_stages: 438 ms 8-bit vs torch bf16 429 ms, a tie within the noise "
                                           "(min 384 vs 333); torch would cost a cold start its import"),
        "blip-decoder": Engine(*_ONNX_INT8, "bench_stages: 29 ms a step 8-bit vs ONNX fp32 36, torch fp32 864, "
                                            "torch bf16 1116 (torch under load)"),
        "clap-text": Engine(*_ONNX_INT8, "bench_stages: 20 ms 8-bit vs ONNX fp32 42, torch bf16 82, fp32 158"),
        "clap-audio": Engine(*_ONNX_INT8, "a whole build of 8 sample tracks (music_to_vector.py, A/B x3, load 1): "
                                          "7.3 s and 945 MiB on ONNX 8-bit vs 12.1 s and 1406 MiB with the tower "
                                          "on torch bf16 (42 vs 92 ms a window in bench_stages under load 4-7: "
                                          "not enough to pay torch's import in a build)"),
    },
    "amx": {  # Intel Xeon with AMX and AVX512-BF16 (issue 21's measurements)
        "blip-vision": Engine("torch", "bf16", "issue 21: 0.29 s torch bf16 vs 0.78 s ONNX 8-bit, 0.71 s ONNX fp32"),
        "blip-decoder": Engine(*_ONNX_INT8, "issue 21: step 17 ms ONNX 8-bit vs torch bf16 57 ms, fp32 48 ms"),
        "clap-text": Engine(*_ONNX_INT8, "issue 21: ONNX Runtime 8-bit for the text towers (no figure given)"),
        "clap-audio": Engine("torch", "bf16", "not measured against ONNX Runtime on AMX; torch bf16 as before, "
                                              "so the build is at least as fast as it was"),
    },
}


def cpu_kind(flags: str) -> str:
    """The row of ENGINES for a CPU with these /proc/cpuinfo flags (any text holding them)."""
    words = set(flags.split())
    if "amx_bf16" in words:
        return "amx"
    if "avx512f" in words:
        return "avx512-bf16" if "avx512_bf16" in words else "avx512"
    return "avx2"  # AVX2 or less: the slowest row's choices are also the safest


def stage_engine(stage: str, flags: str) -> Engine:
    """The engine ENGINES names for `stage` on a CPU with these flags."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {', '.join(STAGES)}, not {stage!r}")
    return ENGINES[cpu_kind(flags)][stage]


def default_precision() -> str:
    return os.environ.get(PRECISION_ENV) or "auto"


def default_backend() -> str:
    return os.environ.get(BACKEND_ENV) or "auto"


@functools.cache
def cpu_flags() -> str:
    """This machine's /proc/cpuinfo, read once (what cpu_kind reads its flags from)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            return f.read()
    except OSError:  # not Linux: no flags known, so no bf16 assumed
        return ""


def cpu_has_native_bf16() -> bool:
    """True when this CPU multiplies bf16 natively (AMX or AVX512-BF16); elsewhere bf16 is emulated and slow."""
    return "amx_bf16" in cpu_flags() or "avx512_bf16" in cpu_flags()


def has_nvidia_gpu() -> bool:
    """Whether an NVIDIA driver is loaded, known without importing torch (a cold start on ONNX Runtime never does)."""
    return os.path.exists("/proc/driver/nvidia/version")


@dataclass(frozen=True)
class ModelChoice:
    """The user's --precision and --backend, one value passed wherever a model is loaded; checked when made
    (ValueError with what to use instead), so a combination no engine runs fails before any loading.

    precision: one of PRECISIONS, backend: one of BACKENDS; "auto" for both lets each stage run on the engine
    ENGINES measured fastest on this CPU (see engine). Ray workers receive it as it is and resolve it on their own
    hardware.
    """

    precision: str = "auto"
    backend: str = "auto"

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {self.backend!r}")
        if self.backend == "onnx" and self.precision == "bf16":
            raise ValueError("bf16 runs on torch only: use --backend torch (or auto) with --precision bf16")

    @classmethod
    def from_env(cls) -> ModelChoice:
        """The choice $MUSIC_MOOD_PRECISION and $MUSIC_MOOD_BACKEND make ("auto" for what they leave unset)."""
        return cls(default_precision(), default_backend())

    def engine(self, stage: str | None = None, flags: str | None = None, gpu: bool | None = None) -> tuple[str, str]:
        """(backend, precision) that `stage` runs in under this choice.

        stage: one of STAGES; needed only when both are "auto". flags: the CPU's /proc/cpuinfo flags (default: this
        machine's); gpu: whether a CUDA GPU is there (default: whether an NVIDIA driver is loaded). Both are
        parameters so the choice can be tested for any machine.

        With backend "auto" and precision "auto": a CUDA GPU runs torch in bf16; a CPU runs each stage on the
        engine ENGINES names for its kind (AVX2, AVX-512, AVX-512 with BF16, AMX), the one measured fastest there
        within the fidelity gate (e.g. on AMX, BLIP's vision tower on torch bf16 and its decoder on ONNX Runtime
        8-bit; on AVX2, ONNX Runtime 8-bit throughout). "fp32" and "bf16" run torch ("fp32" stays exact); "int8"
        runs ONNX Runtime. With backend "torch" every stage runs on torch ("auto" = bf16 where native, else fp32;
        "int8" = torch's dynamic quantisation). With backend "onnx": "auto" and "int8" are 8-bit weights, "fp32"
        is ONNX Runtime in fp32.
        """
        flags = cpu_flags() if flags is None else flags
        precision, backend = self.precision, self.backend
        if backend == "auto":
            if precision in ("fp32", "bf16"):
                backend = "torch"
            elif precision == "int8":
                backend = "onnx"
            elif has_nvidia_gpu() if gpu is None else gpu:
                backend = "torch"
            else:
                if stage is None:
                    raise ValueError("backend and precision auto are chosen per stage: name the stage")
                engine = stage_engine(stage, flags)
                return engine.backend, engine.precision
        if backend == "onnx":
            return "onnx", "fp32" if precision == "fp32" else "int8"
        if precision == "auto":
            if gpu is None:
                import torch

                gpu = torch.cuda.is_available()
            native = gpu or "amx_bf16" in flags or "avx512_bf16" in flags
            precision = "bf16" if native else "fp32"
        return "torch", precision


AUTO = ModelChoice()  # "auto" for both: each stage on the engine measured fastest here


class MixedBlip:
    """BLIP with its vision tower on torch (torch_runtime.TorchVision, TorchScript) and its cross-attention
    keys/values, text decoder and tokenizer on ONNX Runtime (onnx_blip.OnnxBlip): the runtime interface describe.py
    drives, as each engine's. The photo is prepared by OnnxBlip's numpy code (BlipImageProcessor's steps), and the
    torch features (1, patches + 1, hidden) go to the ONNX graphs as float32 numpy.
    """

    def __init__(self, vision, text):
        self.vision, self.text = vision, text
        self.bos_token_id, self.sep_token_id = text.bos_token_id, text.sep_token_id
        self.pad_token_id, self.image_size = text.pad_token_id, text.image_size
        self.vision_batch_size = vision.vision_batch_size

    def cache_key(self) -> dict:
        return {"vision": self.vision.cache_key(), "text": self.text.cache_key()}

    def pixel_values(self, image) -> np.ndarray:
        return self.text.pixel_values(image)

    def image_features(self, pixel_values: np.ndarray) -> np.ndarray:
        """float32 (B, patches + 1, hidden), computed by torch."""
        return np.asarray(self.vision.image_features(pixel_values), np.float32)

    def cross_attention(self, features):
        return self.text.cross_attention(np.asarray(features, np.float32))

    def decode(self, ids, cross, past=None):
        return self.text.decode(ids, cross, past)

    def last_hidden_state(self, ids, cross, past=None):
        return self.text.last_hidden_state(ids, cross, past)

    def repeat(self, past, n: int):
        return self.text.repeat(past, n)

    def encode(self, text: str) -> list[int]:
        return self.text.encode(text)

    def decode_tokens(self, ids) -> str:
        return self.text.decode_tokens(ids)
