"""Model loading: which checkpoints, on the engines (torch or ONNX Runtime) and precisions a ModelChoice resolves to
(engines.py), on which device; each loaded once."""
from __future__ import annotations

import functools
import os
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

from music_mood.engines import AUTO, PRECISIONS, MixedBlip, ModelChoice, cpu_has_native_bf16

DEFAULT_BLIP_MODEL = "Salesforce/blip-image-captioning-base"
DEFAULT_CLAP_MODEL = "laion/clap-htsat-unfused"
BLIP_MODEL_ENV = "MUSIC_MOOD_BLIP_MODEL"
CLAP_MODEL_ENV = "MUSIC_MOOD_CLAP_MODEL"
# BLIP, CLAP's text tower and CLAP's audio tower: the transformers class each loads as, and the ONNX export's name.
MODEL_CLASSES = {"blip": "BlipForConditionalGeneration", "clap-text": "ClapTextModelWithProjection",
                 "clap-audio": "ClapAudioModelWithProjection"}


class ModelLoadError(RuntimeError):
    """A checkpoint could not be loaded; the message says which one and how to fix it."""


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to run: `runtime` is what the product calls (numpy in, numpy out; torch_runtime.TorchBlip or
    onnx_blip.OnnxBlip, and the CLAP towers' equivalents), on `backend` ("torch" or "onnx") in `precision`.

    `name` is the hub id or local directory it came from. On torch, `model`, `processor`, `device` and `dtype`
    are the transformers model, its processor and torch's device and dtype; on ONNX Runtime they are None.
    """

    name: str
    runtime: Any
    backend: str
    precision: str
    model: Any = None
    processor: Any = None
    device: Any = None
    dtype: Any = None
    # What code using the model works out once and keeps with it (describe.memory_of: captions, mood baselines).
    memory: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def embedded_by(self) -> str:
        """How vectors made by this model are labelled in the database: backend-precision, e.g. "onnx-fp32"."""
        return f"{self.backend}-{self.precision}"


def default_blip_model() -> str:
    return os.environ.get(BLIP_MODEL_ENV) or DEFAULT_BLIP_MODEL


def default_clap_model() -> str:
    return os.environ.get(CLAP_MODEL_ENV) or DEFAULT_CLAP_MODEL


def resolve_device_dtype(precision: str = "auto"):
    """The device and dtype every model runs in.

    Device: CUDA when available, else CPU. Precision "auto" means bf16 on CUDA and on CPUs with native bf16,
    fp32 elsewhere; "fp32" and "bf16" force it. "int8" runs on the CPU with fp32 activations (the linear layers'
    weights are quantised after loading, see torch_runtime.quantize_linear_layers).
    """
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "int8":
        return torch.device("cpu"), torch.float32
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if precision == "auto":
        native = device.type == "cuda" or cpu_has_native_bf16()
        precision = "bf16" if native else "fp32"
    return device, torch.bfloat16 if precision == "bf16" else torch.float32


class ModelStopped(Exception):
    """A model call was refused because the job it belongs to was asked to stop (see stoppable)."""


def stoppable(model: LoadedModel, should_stop) -> LoadedModel:
    """`model` whose runtime asks should_stop() before every call and raises ModelStopped when it answers True.

    For a long job made of many model calls (describing 60 photos for a slideshow): a page's Cancel stops it
    within one call instead of after the last photo, and nothing is left half-done, since a call is refused
    before it starts. The returned model shares `model`'s runtime and memory (remembered captions, baselines).
    """
    import dataclasses

    return dataclasses.replace(model, runtime=_StoppableRuntime(model.runtime, should_stop))


class _StoppableRuntime:
    """A runtime's attributes as they are, its methods preceded by the stop check."""

    def __init__(self, runtime, should_stop):
        self._runtime, self._should_stop = runtime, should_stop

    def __getattr__(self, name: str):
        value = getattr(self._runtime, name)
        if not callable(value):
            return value

        @functools.wraps(value)
        def checked(*args, **kwargs):
            if self._should_stop():
                raise ModelStopped(f"stopped before {name}: the job was cancelled")
            return value(*args, **kwargs)

        return checked


def _from_pretrained(kind: str, name: str, model_class: str, dtype, precision: str):
    """(processor, model) from a local directory or the Hugging Face cache, else downloaded from the hub.

    The cache is tried first with no network at all, so a cached model loads at once offline (the hub client
    would otherwise retry its update check for minutes on a machine without network). Only a download shows
    progress; loading from disk is quiet.
    """
    import huggingface_hub
    import transformers
    from huggingface_hub import constants as hub_constants

    # int8 replaces the fp32 linear weights; read into memory, they are freed then, whereas a memory-mapped
    # checkpoint file would stay mapped with all its pages resident.
    extra = {"disable_mmap": True} if precision == "int8" else {}
    hub_verbosity = huggingface_hub.utils.logging.get_verbosity()
    verbosity = transformers.logging.get_verbosity()
    # Loading one tower of CLAP reports the other tower's weights as "unexpected": true, and noise to a user.
    transformers.logging.set_verbosity_error()
    huggingface_hub.utils.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        try:
            return (transformers.AutoProcessor.from_pretrained(name, local_files_only=True),
                    getattr(transformers, model_class).from_pretrained(name, dtype=dtype, local_files_only=True,
                                                                       **extra))
        except OSError:  # not in the cache (or only partly): fetch what is missing, unless that cannot work
            if os.path.isdir(name) or hub_constants.HF_HUB_OFFLINE:
                raise
        print(f"Downloading the {kind} model {name} from the Hugging Face Hub (once; then it is cached)...",
              file=sys.stderr)
        transformers.logging.enable_progress_bar()
        return (transformers.AutoProcessor.from_pretrained(name),
                getattr(transformers, model_class).from_pretrained(name, dtype=dtype, **extra))
    finally:
        transformers.logging.set_verbosity(verbosity)
        huggingface_hub.utils.logging.set_verbosity(hub_verbosity)
        transformers.logging.enable_progress_bar()


def _checked_name(kind: str, name: str) -> str:
    """The hub id, or the absolute local directory, a --blip-model/--clap-model value names."""
    flag, env = ("--blip-model", BLIP_MODEL_ENV) if kind == "BLIP" else ("--clap-model", CLAP_MODEL_ENV)
    if (os.path.isabs(name) or name.startswith((".", "~"))) and not os.path.isdir(os.path.expanduser(name)):
        # A path, not a hub id: the hub's "Repo id must use alphanumeric chars" would only confuse.
        raise ModelLoadError(f"cannot load the {kind} model {name!r}: no such directory. Pass a directory written "
                             f"by save_pretrained, or a hub id, with {flag} or {env}.")
    name = os.path.expanduser(name)
    if os.path.isdir(name):  # recorded in the database: it must name the same folder from any working directory
        name = os.path.abspath(name)
    return name


def load_transformers(kind: str, name: str, model_class: str, precision: str):
    """(processor, model) in torch, on the device and in the dtype `precision` gives, in eval mode; ModelLoadError
    with what to do when the checkpoint cannot be loaded. Also what an ONNX export is made from (in fp32)."""
    device, dtype = resolve_device_dtype(precision)
    flag, env = ("--blip-model", BLIP_MODEL_ENV) if kind == "BLIP" else ("--clap-model", CLAP_MODEL_ENV)
    try:
        processor, model = _from_pretrained(kind, name, model_class, dtype, precision)
    except Exception as e:  # transformers raises OSError, ValueError, HF hub errors... all mean "not loadable"
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(
            f"cannot load the {kind} model {name!r} ({reason}). Download it once while online "
            f"(hf download {name}) so it is in the Hugging Face cache, or pass a local directory "
            f"written by save_pretrained with {flag} or {env}."
        ) from e
    return processor, model.to(device).eval()


def _load_torch(kind: str, name: str, part: str, precision: str) -> LoadedModel:
    from music_mood import torch_runtime

    device, dtype = resolve_device_dtype(precision)
    processor, model = load_transformers(kind, name, MODEL_CLASSES[part], precision)
    if part == "blip":
        torch_runtime.fuse_vision_attention(model)
    if part == "clap-audio":
        torch_runtime.fuse_audio_attention(model)
    if precision == "int8":
        model = torch_runtime.quantize_linear_layers(model)
    runtime_class = {"blip": torch_runtime.TorchBlip, "clap-text": torch_runtime.TorchClapText,
                     "clap-audio": torch_runtime.TorchClapAudio}[part]
    return LoadedModel(name=name, runtime=runtime_class(model, processor, device, dtype), backend="torch",
                       precision=precision, model=model, processor=processor, device=device, dtype=dtype)


def _load_onnx(kind: str, name: str, part: str, precision: str) -> LoadedModel:
    from music_mood.exports import ExportError, load_export

    try:
        runtime = load_export(part, name, precision,
                              lambda: load_transformers(kind, name, MODEL_CLASSES[part], "fp32"))
    except ExportError as e:
        print(f"The {kind} model {name} runs on torch: {e}", file=sys.stderr)
        return _load_torch(kind, name, part, ModelChoice(backend="torch").engine()[1])
    return LoadedModel(name=name, runtime=runtime, backend="onnx", precision=precision)


def _load_mixed(name: str, vision_precision: str, decoder_precision: str) -> LoadedModel:
    """BLIP with its vision tower on torch and its decoder on ONNX Runtime (engines.MixedBlip), as backend
    "torch+onnx" and precision "<vision's>+<decoder's>". The vision tower is loaded from its TorchScript export,
    so only torch is imported, not transformers."""
    from music_mood.exports import ExportError, load_export

    text = _load_onnx("BLIP", name, "blip", decoder_precision)
    if text.backend != "onnx":  # not exportable: the torch model it fell back to runs everything
        return text
    try:
        vision = load_export("blip-vision", name, vision_precision,
                             lambda: load_transformers("BLIP", name, MODEL_CLASSES["blip"], "fp32"))
    except ExportError as e:
        print(f"The BLIP model {name} runs on ONNX Runtime alone: {e}", file=sys.stderr)
        return text
    return LoadedModel(name=name, runtime=MixedBlip(vision, text.runtime), backend="torch+onnx",
                       precision=f"{vision_precision}+{decoder_precision}")


# The stages each part runs: BLIP's two halves may run on two engines (engines.ENGINES).
_STAGES = {"blip": ("blip-vision", "blip-decoder"), "clap-text": ("clap-text",), "clap-audio": ("clap-audio",)}


def _resolved(kind: str, name: str, part: str, choice: ModelChoice) -> tuple[str, str, str]:
    """(checkpoint name, backend, precision) a choice resolves to for a part; ModelLoadError for a bad path.
    A BLIP whose stages run on two engines resolves to "torch+onnx" and "<vision's>+<decoder's>"."""
    engines = [choice.engine(stage) for stage in _STAGES[part]]
    if len(set(engines)) > 1:
        (vision_backend, vision_precision), (decoder_backend, decoder_precision) = engines
        if (vision_backend, decoder_backend) != ("torch", "onnx"):  # no such BLIP: the decoder's engine for both
            return _checked_name(kind, name), decoder_backend, decoder_precision
        return _checked_name(kind, name), "torch+onnx", f"{vision_precision}+{decoder_precision}"
    return _checked_name(kind, name), *engines[0]


def _load_resolved(kind: str, name: str, part: str, backend: str, precision: str) -> LoadedModel:
    if backend == "torch+onnx":
        return _load_mixed(name, *precision.split("+"))
    if backend == "onnx":
        return _load_onnx(kind, name, part, precision)
    return _load_torch(kind, name, part, precision)


# One load per resolved request: "auto" and the precision it resolves to share one model.
_loaded = functools.lru_cache(maxsize=8)(_load_resolved)


def _load(kind: str, name: str, part: str, choice: ModelChoice) -> LoadedModel:
    """Load a part ("blip", "clap-text", "clap-audio") afresh; the load_* functions keep what this returns."""
    name, backend, precision = _resolved(kind, name, part, choice)
    return _load_resolved(kind, name, part, backend, precision)


def _load_once(kind: str, name: str, part: str, choice: ModelChoice) -> LoadedModel:
    """The part loaded once per process for what the choice resolves to."""
    name, backend, precision = _resolved(kind, name, part, choice)
    return _loaded(kind, name, part, backend, precision)


def load_blip(name: str, choice: ModelChoice = AUTO) -> LoadedModel:
    """BLIP captioning model (BlipForConditionalGeneration), by hub id or local directory; on the engines `choice`
    names for its two stages (ModelChoice.engine)."""
    return _load_once("BLIP", name, "blip", choice)


def load_clap_text(name: str, choice: ModelChoice = AUTO) -> LoadedModel:
    """Only CLAP's text tower and projection (ClapTextModelWithProjection): what a query needs."""
    return _load_once("CLAP", name, "clap-text", choice)


def load_clap_audio(name: str, choice: ModelChoice = AUTO) -> LoadedModel:
    """Only CLAP's audio tower and projection (ClapAudioModelWithProjection): what the database builder needs."""
    return _load_once("CLAP", name, "clap-audio", choice)


class BackgroundModels:
    """A server's models, loaded once in the background; the web page is served while they load and says so.

    BLIP and CLAP's text tower are loaded by load(); CLAP's audio tower only when music is first added, since
    nothing else on the page needs it. All three run on the engines `choice` (the server's --precision and
    --backend) resolves to.
    """

    def __init__(self, blip_model: str, clap_model: str, choice: ModelChoice = AUTO):
        self.blip_model, self.clap_model, self.choice = blip_model, clap_model, choice
        self.blip = self.clap = None
        self.error: Exception | None = None
        self.ready = threading.Event()

    def load(self) -> None:
        from music_mood.describe import neutral_mood_scores

        try:
            self.blip = load_blip(self.blip_model, self.choice)
            self.clap = load_clap_text(self.clap_model, self.choice)
            neutral_mood_scores(self.blip)  # read from the cache, or computed now rather than in the first request
        except ModelLoadError as e:
            self.error = e
        finally:
            self.ready.set()

    def status(self) -> str:
        if not self.ready.is_set():
            return "Loading the models (once, at start): recommendations start as soon as they are ready."
        return f"Models could not be loaded: {self.error}" if self.error else ""

    def query_models(self):
        """(blip, clap text model), waiting for them if they are still loading; ModelLoadError if they failed."""
        self.ready.wait()
        if self.error:
            raise ModelLoadError(f"The models could not be loaded: {self.error}")
        return self.blip, self.clap

    def audio_model(self):
        """CLAP's audio tower, loaded after load() has finished: transformers models loaded by two threads at
        once break each other (an upload during start-up killed the app)."""
        self.ready.wait()
        return load_clap_audio(self.clap_model, self.choice)
