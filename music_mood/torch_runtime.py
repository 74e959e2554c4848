"""BLIP and CLAP on torch: the transformers models behind the runtime interface the rest of the product calls
(numpy in, numpy out; music_mood/onnx_blip.py and onnx_clap.py are the ONNX Runtime side of the same interface),
and what is done to the models once they are loaded (fused attention, int8 layers)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from music_mood.memory import release_freed_memory


def model_fingerprint(model) -> str:
    """A content hash of a model's weights, cheap enough to take at every start (~20 ms for BLIP-base in RAM): each
    parameter's name, shape and 4096 evenly spaced values. Checkpoints trained or initialised differently differ
    in it; so do fp32 and int8 loads of one checkpoint (int8 layers hold no float parameters)."""
    digest = hashlib.sha256()
    for name, parameter in model.named_parameters():
        flat = parameter.detach().reshape(-1)
        sample = flat[::max(1, flat.numel() // 4096)][:4096].float().cpu().numpy()
        digest.update(f"{name}{tuple(parameter.shape)}".encode())
        digest.update(sample.tobytes())
    return digest.hexdigest()


def _versions() -> dict:
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__}


@dataclass
class _CrossAttention:
    """One photo's vision features and the decoder's cross-attention keys/values over them, filled by the first
    decode and reused by every later one (the caption's steps and the mood words)."""

    features: Any
    cache: Any


class TorchBlip:
    """BlipForConditionalGeneration behind the BLIP runtime interface (see describe.py, which drives it)."""

    # Photos whose vision passes describe.describe_pixels runs as one batch: on full-size BLIP in fp32 on a 2-core
    # CPU, 4 at a time took 22 % less CPU time per photo than 1 at a time (1.58 s against 2.03), 8 at a time no
    # less than 4 (benchmarks/bench_vision_batch.py).
    vision_batch_size = 4

    def __init__(self, model, processor, device, dtype):
        self.model, self.processor, self.device, self.dtype = model, processor, device, dtype
        text_config = model.config.text_config
        self.bos_token_id, self.sep_token_id = text_config.bos_token_id, text_config.sep_token_id
        self.pad_token_id = text_config.pad_token_id
        size = processor.image_processor.size
        self.image_size = (size["height"], size["width"])

    def cache_key(self) -> dict:
        """What results derived from this model alone (the mood baseline) depend on."""
        return {"model": model_fingerprint(self.model), "dtype": str(self.dtype), "device": self.device.type,
                **_versions()}

    def pixel_values(self, image) -> np.ndarray:
        """What the vision tower sees of an RGB PIL image: float32 (1, 3, H, W), resized and normalised."""
        return self.processor(images=image, return_tensors="pt").pixel_values.numpy()

    def image_features(self, pixel_values: np.ndarray):
        """The vision tower: a tensor (1, patches + 1, hidden) in the model's dtype."""
        import torch

        with torch.inference_mode():
            pixels = torch.from_numpy(pixel_values).to(self.device, self.dtype)
            return self.model.vision_model(pixel_values=pixels)[0]

    def cross_attention(self, features) -> _CrossAttention:
        from transformers import DynamicCache

        return _CrossAttention(features, DynamicCache())

    def decode(self, ids: np.ndarray, cross: _CrossAttention, past=None):
        """Decoder logits float32 (B, T, vocab) for token ids (B, T) after `past`, and the past extended by them.

        The cross-attention keys/values are computed by the first call for a photo and reused by later ones;
        generate() would compute them again at every token.
        """
        import torch
        from transformers import DynamicCache, EncoderDecoderCache

        past = DynamicCache() if past is None else past
        with torch.inference_mode():
            out = self.model.text_decoder(input_ids=torch.from_numpy(np.asarray(ids, np.int64)).to(self.device),
                                          encoder_hidden_states=cross.features,
                                          cache=EncoderDecoderCache(past, cross.cache), use_cache=True)
            return out.logits.float().cpu().numpy(), past

    def repeat(self, past, n: int):
        """A batch-1 past repeated to batch n (the mood words run as one batch after a shared prefix)."""
        past.batch_repeat_interleave(n)
        return past

    def encode(self, text: str) -> list[int]:
        return self.processor.tokenizer(text, add_special_tokens=False).input_ids

    def decode_tokens(self, ids) -> str:
        return self.processor.tokenizer.decode(list(ids), skip_special_tokens=True).strip()


class TorchClapText:
    """ClapTextModelWithProjection behind the CLAP text runtime interface."""

    def __init__(self, model, processor, device, dtype):
        self.model, self.processor, self.device, self.dtype = model, processor, device, dtype
        self.dim = model.config.projection_dim

    def embed_text(self, texts) -> np.ndarray:
        """CLAP text embeddings of a list of strings: float32 (n, D), each row L2-normalised."""
        import torch

        tokenizer = self.processor.tokenizer
        inputs = tokenizer(list(texts), return_tensors="pt", padding=True, truncation=True,
                           max_length=min(tokenizer.model_max_length, 512))
        with torch.inference_mode():
            out = self.model(input_ids=inputs.input_ids.to(self.device),
                             attention_mask=inputs.attention_mask.to(self.device))
            vectors = torch.nn.functional.normalize(out.text_embeds.float(), dim=-1)
        return vectors.cpu().numpy().astype(np.float32)


class TorchClapAudio:
    """ClapAudioModelWithProjection behind the CLAP audio runtime interface: exact-length windows in, vectors out."""

    def __init__(self, model, processor, device, dtype):
        self.model, self.processor, self.device, self.dtype = model, processor, device, dtype
        extractor = processor.feature_extractor
        self.dim = model.config.projection_dim
        self.sampling_rate, self.window_samples = extractor.sampling_rate, extractor.nb_max_samples

    def embed_windows(self, windows: np.ndarray) -> np.ndarray:
        """float32 (B, window_samples) → float32 (B, D), rows L2-normalised; callers batch (embed.embed_windows)."""
        import torch

        features = log_mel_features(self.processor.feature_extractor, windows)
        with torch.inference_mode():
            embeds = self.model(input_features=features.to(self.device, self.dtype)).audio_embeds
            return torch.nn.functional.normalize(embeds.float(), dim=-1).cpu().numpy()


def log_mel_features(extractor, windows: np.ndarray):
    """The CLAP model's input for exact-length windows float32 (B, N): a float32 tensor (B, C, frames, mels).

    What `extractor(...).input_features` gives, to float32 rounding. For the unfused checkpoint's extractor
    (rand_trunc, no top_db) it is computed here with one batched torch.stft in a third of the time or less:
    transformers' extractor loops over the 1001 frames of a window in Python, in float64. Any other configuration
    (a fused checkpoint's "fusion" stacks four views) is left to the extractor itself.
    """
    import torch
    from transformers import ClapFeatureExtractor

    if not (isinstance(extractor, ClapFeatureExtractor) and extractor.truncation == "rand_trunc"
            and extractor.top_db is None and windows.shape[1] == extractor.nb_max_samples):
        return extractor(list(windows), sampling_rate=extractor.sampling_rate, return_tensors="pt").input_features
    # Mirrors ClapFeatureExtractor._np_extract_fbank_features with mel_filters_slaney: periodic Hann window,
    # centred frames with reflect padding, power 2, then 10 * log10(max(mel, 1e-10)) with reference 1.
    audio = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32))
    window = torch.hann_window(extractor.fft_window_size, periodic=True)
    power = torch.stft(audio, extractor.fft_window_size, extractor.hop_length, window=window, center=True,
                       pad_mode="reflect", return_complex=True).abs() ** 2
    mel = power.transpose(1, 2) @ torch.from_numpy(extractor.mel_filters_slaney).float()
    return (10 * torch.log10(torch.clamp(mel, min=1e-10)))[:, None]


def quantize_linear_layers(model):
    """Dynamic int8 quantisation of every nn.Linear: int8 weights, activations quantised per batch at run time.

    torch's int8 option (--backend torch --precision int8); on CPUs ONNX Runtime's int8 decoder is the faster one.
    """
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization announces its move to torchao on every call
        # In place: a copy would hold the fp32 and the int8 model at once.
        model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
    release_freed_memory()
    return model


def fuse_vision_attention(blip_model) -> None:
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


def fuse_audio_attention(clap_model) -> None:
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


# A BLIP vision tower saved alone as TorchScript, in bf16 or fp32: what a BLIP whose decoder runs on ONNX Runtime
# (engines.MixedBlip) loads, importing torch but not transformers (seconds of a cold start). TorchScript, though
# torch deprecates it, rather than torch.export: full-size, bf16, one process each (2 cores, load 3), torch.jit.load
# took 0.15 s and torch.export.load 2.4 s (it imports sympy), and the two ran a photo as fast as eager torch.
VISION_FILE, VISION_CONFIG = "vision.pt", "vision.json"
VISION_PRECISIONS = ("fp32", "bf16")


def vision_features_module(vision_model):
    """BLIP's vision tower as a module of one tensor in, one out (pixel_values -> last_hidden_state), in eval mode:
    the form both exporters trace (TorchScript here, ONNX in onnx_blip)."""
    import torch

    class Vision(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.vision_model = vision_model

        def forward(self, pixel_values):
            return self.vision_model(pixel_values=pixel_values)[0]

    return Vision().eval()


def export_vision(model, processor, folder, precision: str) -> None:
    """Write BLIP's vision tower (fused attention, in `precision`'s dtype) into `folder` as TorchScript traced on a
    batch of 2 (no batch size is traced in), and vision.json. model: BlipForConditionalGeneration in fp32 (its
    vision tower is converted in place: the exporter's own copy)."""
    import json
    import warnings
    from pathlib import Path

    import torch

    if precision not in VISION_PRECISIONS:
        raise ValueError(f"a torch vision tower is saved in {' or '.join(VISION_PRECISIONS)}, not {precision!r}")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    fuse_vision_attention(model)
    vision = vision_features_module(model.vision_model.to(dtype))
    size = processor.image_processor.size
    example = torch.zeros(2, 3, size["height"], size["width"], dtype=dtype)
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notice (see VISION_FILE), tracer warnings
        traced = torch.jit.trace(vision, example, check_trace=False)
    traced.save(str(Path(folder) / VISION_FILE))
    (Path(folder) / VISION_CONFIG).write_text(json.dumps({"precision": precision, "height": size["height"],
                                                          "width": size["width"]}), encoding="utf-8")


class TorchVision:
    """BLIP's vision tower saved by export_vision: pixel_values float32 (B, 3, H, W) -> features float32
    (B, patches + 1, hidden), run by torch (TorchScript) without transformers."""

    vision_batch_size = TorchBlip.vision_batch_size

    def __init__(self, folder, module, config: dict):
        self.folder, self.module, self.config = folder, module, config
        self.precision = config["precision"]

    @classmethod
    def load(cls, folder, threads: int | None = None) -> TorchVision:
        import json
        import warnings
        from pathlib import Path

        import torch

        folder = Path(folder)
        config = json.loads((folder / VISION_CONFIG).read_text(encoding="utf-8"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # see VISION_FILE
            module = torch.jit.load(str(folder / VISION_FILE), map_location="cpu").eval()
        return cls(folder, module, config)

    def cache_key(self) -> dict:
        import torch

        return {"export": self.folder.name, "torch": torch.__version__}

    def image_features(self, pixel_values: np.ndarray) -> np.ndarray:
        import torch

        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
        with torch.inference_mode():
            return self.module(torch.from_numpy(np.asarray(pixel_values, np.float32)).to(dtype)).float().numpy()
