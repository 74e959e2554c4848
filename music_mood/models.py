"""Model loading: which checkpoints, on which device and in which precision, loaded lazily and once."""
from __future__ import annotations

import functools
import os
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

DEFAULT_BLIP_MODEL = "Salesforce/blip-image-captioning-base"
DEFAULT_CLAP_MODEL = "laion/clap-htsat-unfused"
BLIP_MODEL_ENV = "MUSIC_MOOD_BLIP_MODEL"
CLAP_MODEL_ENV = "MUSIC_MOOD_CLAP_MODEL"
PRECISION_ENV = "MUSIC_MOOD_PRECISION"
PRECISIONS = ("auto", "fp32", "bf16", "int8")


class ModelLoadError(RuntimeError):
    """A checkpoint could not be loaded; the message says which one and how to fix it."""


@dataclass(frozen=True)
class LoadedModel:
    """A model with its processor, and where it runs.

    `name` is the hub id or local directory it came from; `device` and `dtype` are torch objects.
    """

    name: str
    model: Any
    processor: Any
    device: Any
    dtype: Any
    # What code using the model works out once and keeps with it (describe.memory_of: captions, mood baselines).
    memory: dict = field(default_factory=dict, repr=False, compare=False)


def default_blip_model() -> str:
    return os.environ.get(BLIP_MODEL_ENV) or DEFAULT_BLIP_MODEL


def default_clap_model() -> str:
    return os.environ.get(CLAP_MODEL_ENV) or DEFAULT_CLAP_MODEL


def default_precision() -> str:
    return os.environ.get(PRECISION_ENV) or "auto"


def cpu_has_native_bf16() -> bool:
    """True when this CPU multiplies bf16 natively (AMX or AVX512-BF16); elsewhere bf16 is emulated and slow."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            flags = f.read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_device_dtype(precision: str = "auto"):
    """The device and dtype every model runs in.

    Device: CUDA when available, else CPU. Precision "auto" means bf16 on CUDA and on CPUs with native bf16,
    fp32 elsewhere; "fp32" and "bf16" force it. "int8" runs on the CPU with fp32 activations (the linear layers'
    weights are quantised after loading, see _quantize_linear_layers).
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


def _quantize_linear_layers(model):
    """Dynamic int8 quantisation of every nn.Linear: int8 weights, activations quantised per batch at run time.

    On a CPU without native bf16 this is the low-precision option that pays: one-token decoder steps are bound by
    reading the weights, which int8 makes 4x smaller. Opt-in, because it changes outputs slightly.
    """
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization announces its move to torchao on every call
        # In place: a copy would hold the fp32 and the int8 model at once.
        model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
    release_freed_memory()
    return model


def release_freed_memory() -> None:
    """Hand memory freed inside the process back to the OS: glibc keeps freed blocks (replaced weights, a query's
    activations) in its arenas otherwise, and a long-running process's RSS only grows. Costs a few milliseconds."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl): nothing to do
        pass


def _fuse_vision_attention(blip_model) -> None:
    """Run BLIP's vision self-attention through torch's fused scaled_dot_product_attention.

    transformers' BlipAttention multiplies, softmaxes and multiplies again in separate ops over the 577 x 577
    scores of every head; the fused kernel gives the same result (to float rounding) in about half the time,
    which is ~0.3 s per photo on a 2-core CPU. Attention weights are no longer returned (nothing here asks).
    """
    import torch

    def fused(attention):
        def forward(hidden_states, **kwargs):
            batch, length, width = hidden_states.shape
            qkv = attention.qkv(hidden_states).reshape(batch, length, 3, attention.num_heads, -1).permute(2, 0, 3, 1, 4)
            context = torch.nn.functional.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], scale=attention.scale)
            return attention.projection(context.transpose(1, 2).reshape(batch, length, width)), None
        return forward

    for layer in blip_model.vision_model.encoder.layers:
        layer.self_attn.forward = fused(layer.self_attn)


def _fuse_audio_attention(clap_model) -> None:
    """Run CLAP's audio-tower (HTSAT, Swin) window attention through torch's fused scaled_dot_product_attention.

    transformers' ClapAudioSelfAttention materialises the 64 x 64 scores of every head of every window, adds the
    relative position bias and the shifted-window mask in separate passes, then softmaxes and multiplies; the fused
    kernel takes bias + mask as one additive attn_mask and gives the same result to float rounding. On a 2-core CPU
    the tower takes 10-20 % less time on batches of 8 windows, whose first-stage scores (32 MB) the kernel never
    writes out, and 1-3 % less on batches of 4 or fewer. A caller that asks for attention weights gets
    transformers' own forward, which returns them.
    """
    import torch

    def fused(attention):
        original = attention.forward

        def forward(hidden_states, attention_mask=None, output_attentions=False):
            if output_attentions:
                return original(hidden_states, attention_mask, output_attentions)
            windows, length, width = hidden_states.shape
            heads = attention.num_attention_heads
            shape = (windows, length, heads, attention.attention_head_size)
            query, key, value = (projection(hidden_states).view(shape).transpose(1, 2)
                                 for projection in (attention.query, attention.key, attention.value))
            bias = attention.relative_position_bias_table[attention.relative_position_index.view(-1)]
            bias = bias.view(length, length, heads).permute(2, 0, 1)  # (heads, length, length)
            if attention_mask is None:
                mask = bias[None]  # broadcast over windows
            else:
                # attention_mask is one (length, length) mask per window position of an image, (windows per
                # image, length, length), and the batch holds those windows image after image. Broadcasting
                # cannot fold the image index into the window index, so the sum is repeated per image.
                mask = (attention_mask[:, None] + bias).repeat(windows // len(attention_mask), 1, 1, 1)
            context = torch.nn.functional.scaled_dot_product_attention(
                query, key, value, attn_mask=mask.to(query.dtype), scale=attention.attention_head_size ** -0.5)
            return (context.transpose(1, 2).reshape(windows, length, width),)
        return forward

    for stage in clap_model.audio_model.audio_encoder.layers:
        for block in stage.blocks:
            block.attention.self.forward = fused(block.attention.self)


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


def _load(kind: str, name: str, model_class: str, precision: str) -> LoadedModel:
    device, dtype = resolve_device_dtype(precision)
    flag, env = ("--blip-model", BLIP_MODEL_ENV) if kind == "BLIP" else ("--clap-model", CLAP_MODEL_ENV)
    if (os.path.isabs(name) or name.startswith((".", "~"))) and not os.path.isdir(os.path.expanduser(name)):
        # A path, not a hub id: the hub's "Repo id must use alphanumeric chars" would only confuse.
        raise ModelLoadError(f"cannot load the {kind} model {name!r}: no such directory. Pass a directory written "
                             f"by save_pretrained, or a hub id, with {flag} or {env}.")
    name = os.path.expanduser(name)
    if os.path.isdir(name):  # recorded in the database: it must name the same folder from any working directory
        name = os.path.abspath(name)
    try:
        processor, model = _from_pretrained(kind, name, model_class, dtype, precision)
    except Exception as e:  # transformers raises OSError, ValueError, HF hub errors... all mean "not loadable"
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(
            f"cannot load the {kind} model {name!r} ({reason}). Download it once while online "
            f"(hf download {name}) so it is in the Hugging Face cache, or pass a local directory "
            f"written by save_pretrained with {flag} or {env}."
        ) from e
    model.to(device).eval()
    if model_class == "BlipForConditionalGeneration":
        _fuse_vision_attention(model)
    if model_class == "ClapAudioModelWithProjection":
        _fuse_audio_attention(model)
    if precision == "int8":
        model = _quantize_linear_layers(model)
    return LoadedModel(name=name, model=model, processor=processor, device=device, dtype=dtype)


@functools.lru_cache(maxsize=4)
def load_blip(name: str, precision: str = "auto") -> LoadedModel:
    """BLIP captioning model (BlipForConditionalGeneration) and its processor, by hub id or local directory."""
    return _load("BLIP", name, "BlipForConditionalGeneration", precision)


@functools.lru_cache(maxsize=4)
def load_clap_text(name: str, precision: str = "auto") -> LoadedModel:
    """Only CLAP's text tower and projection (ClapTextModelWithProjection): what a query needs."""
    return _load("CLAP", name, "ClapTextModelWithProjection", precision)


@functools.lru_cache(maxsize=4)
def load_clap_audio(name: str, precision: str = "auto") -> LoadedModel:
    """Only CLAP's audio tower and projection (ClapAudioModelWithProjection): what the database builder needs."""
    return _load("CLAP", name, "ClapAudioModelWithProjection", precision)


class BackgroundModels:
    """A server's models, loaded once in the background; the web page is served while they load and says so.

    BLIP and CLAP's text tower are loaded by load(); CLAP's audio tower only when music is first added, since
    nothing else on the page needs it.
    """

    def __init__(self, blip_model: str, clap_model: str, precision: str):
        self.blip_model, self.clap_model, self.precision = blip_model, clap_model, precision
        self.blip = self.clap = None
        self.error: Exception | None = None
        self.ready = threading.Event()

    def load(self) -> None:
        from music_mood.describe import neutral_mood_scores

        try:
            self.blip = load_blip(self.blip_model, self.precision)
            self.clap = load_clap_text(self.clap_model, self.precision)
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
        return load_clap_audio(self.clap_model, self.precision)
