"""CLAP's towers exported from transformers to ONNX (onnx_clap.py holds the format and its torch-free runtime), each
export held to the fidelity gate against torch. torch, transformers and onnx are imported inside the functions.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from music_mood.onnx_clap import (
    AUDIO_CONFIG,
    AUDIO_MEL_FILTERS,
    AUDIO_MODEL,
    FORMAT_VERSION,
    PRECISIONS,
    TEXT_CONFIG,
    TEXT_MODEL,
    TEXT_TOKENIZER,
    OnnxClapAudio,
    OnnxClapError,
    OnnxClapText,
    log_mel_features,
)

OPSET = 17
# The fidelity gate: a tower's vectors at the exported precision against the fp32 torch model's, same input.
MIN_COSINE = {"fp32": 0.99999, "int8": 0.999}
# Texts the export embeds with torch and ORT to check the gate: short, a query's length, one truncated.
PROBE_TEXTS = ("calm", "a dog running on the beach at sunset; happy, warm, playful mood",
               "the sound of rain on a window at night " * 80)


def _check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two float (n, D) arrays, in float64."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _export_onnx(module, inputs: tuple, path: Path, input_names: list[str], output_name: str,
                 dynamic_axes: dict) -> None:
    """torch → ONNX with the TorchScript exporter, quietly (it warns about every traced shape computation)."""
    import warnings

    import torch

    module.eval()  # the exporter puts the module back in the mode it found it in: eval, or dropout would stay on
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, inputs, str(path), dynamo=False, opset_version=OPSET, input_names=input_names,
                          output_names=[output_name], dynamic_axes=dynamic_axes, do_constant_folding=True)


def _quantize_matmul_weights(path: Path) -> None:
    """Rewrite the .onnx at `path` with its constant-weight MatMuls as 8-bit weight-only MatMulNBits (blocks of 128
    along the input dimension, symmetric), computed with int8 activations (accuracy_level 4)."""
    import logging

    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    config = DefaultWeightOnlyQuantConfig(block_size=128, is_symmetric=True, accuracy_level=4, bits=8)
    quantizer = MatMulNBitsQuantizer(onnx.load(str(path)), bits=8, block_size=128, is_symmetric=True,
                                     accuracy_level=4, algo_config=config)
    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.WARNING)  # the quantizer logs every node it rewrites at INFO
    try:
        quantizer.process()
    finally:
        logging.getLogger().setLevel(level)
    quantizer.model.save_model_to_file(str(path), use_external_data_format=False)



# ---------------------------------------------------------------------------------------------------------- text


def _text_tower(model, embedding_dtype):
    """ClapTextModelWithProjection as a torch module (input_ids, attention_mask) int64 (B, L) → text_embeds
    float32 (B, D), unnormalised, with the word-embedding table kept in `embedding_dtype`.

    Written out rather than traced through transformers' forward: the position ids and the additive attention
    mask are spelled as the ops ONNX needs, and the table can be stored in fp16 (half the 154 MB of RoBERTa-base's)
    with its rows cast to fp32 after the lookup, which ORT cannot fold back into an fp32 table.
    """
    import torch

    class TextTower(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            embeddings = model.text_model.embeddings
            self.register_buffer("words", embeddings.word_embeddings.weight.detach().to(embedding_dtype))
            self.padding_idx = embeddings.padding_idx

        def forward(self, input_ids, attention_mask):
            text = self.model.text_model
            embeddings = text.embeddings
            # RoBERTa's positions count non-padding tokens from padding_idx + 1; padding keeps padding_idx.
            not_padding = input_ids.ne(self.padding_idx).long()
            positions = torch.cumsum(not_padding, dim=1) * not_padding + self.padding_idx
            hidden = (self.words[input_ids].float() + embeddings.token_type_embeddings.weight[0]
                      + embeddings.position_embeddings(positions))
            hidden = embeddings.LayerNorm(hidden)
            additive_mask = (1.0 - attention_mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
            hidden = text.encoder(hidden, attention_mask=additive_mask).last_hidden_state
            return self.model.text_projection(text.pooler(hidden))

    return TextTower()


def export_clap_text(model, processor, folder: Path, precision: str) -> None:
    """Write CLAP's text tower into `folder` (existing, empty) for OnnxClapText.load.

    `model` is ClapTextModelWithProjection in fp32, `processor` its ClapProcessor. "fp32" keeps every weight in
    fp32; "int8" stores the MatMul weights as 8-bit blocks (MatMulNBits) and the word-embedding table in fp16,
    which cuts the file and the session's memory to about a third. The export embeds PROBE_TEXTS with torch and with
    the written model and raises OnnxClapError if a cosine falls below MIN_COSINE[precision].
    """
    import torch

    _check_precision(precision)
    folder = Path(folder)
    tokenizer = processor.tokenizer
    max_length = min(tokenizer.model_max_length, 512)
    sample = tokenizer(["a calm piano song", "rain"], return_tensors="pt", padding=True)
    tower = _text_tower(model, torch.float16 if precision == "int8" else torch.float32)
    _export_onnx(tower, (sample.input_ids, sample.attention_mask), folder / TEXT_MODEL,
                 ["input_ids", "attention_mask"], "text_embeds",
                 {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
                  "text_embeds": {0: "batch"}})
    if precision == "int8":
        _quantize_matmul_weights(folder / TEXT_MODEL)

    # The Rust tokenizer alone, padding and truncation off: the runtime sets them as query.embed_text asks for.
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_padding()
    backend.no_truncation()
    (folder / TEXT_TOKENIZER).write_text(backend.to_str(), encoding="utf-8")
    _write_json(folder / TEXT_CONFIG, {
        "format_version": FORMAT_VERSION, "precision": precision, "dim": int(model.config.projection_dim),
        "max_length": int(max_length), "pad_token": tokenizer.pad_token, "pad_id": int(tokenizer.pad_token_id),
        "padding_side": tokenizer.padding_side, "truncation_side": tokenizer.truncation_side,
    })

    with torch.inference_mode():
        inputs = tokenizer(list(PROBE_TEXTS), return_tensors="pt", padding=True, truncation=True,
                           max_length=max_length)
        expected = model(input_ids=inputs.input_ids, attention_mask=inputs.attention_mask).text_embeds.numpy()
    cosines = _cosines(OnnxClapText.load(folder).embed_text(list(PROBE_TEXTS)), expected)
    if cosines.min() < MIN_COSINE[precision]:
        raise OnnxClapError(f"the {precision} text tower's vectors differ from torch's (cosine {cosines.min():.6f} "
                            f"< {MIN_COSINE[precision]}); use precision 'fp32'.")


# --------------------------------------------------------------------------------------------------------- audio


def _audio_tower(model):
    """ClapAudioModelWithProjection as a torch module: input_features float32 (B, 1, frames, mels) → audio_embeds
    float32 (B, D), unnormalised."""
    import torch

    class AudioTower(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_features):
            return self.model(input_features=input_features).audio_embeds

    return AudioTower()


def _check_unfused_extractor(extractor) -> None:
    """ValueError unless the features are what log_mel_features computes: the unfused checkpoints' extractor."""
    problems = []
    if getattr(extractor, "truncation", None) != "rand_trunc":
        problems.append(f"truncation {getattr(extractor, 'truncation', None)!r} (needs 'rand_trunc')")
    if getattr(extractor, "top_db", None) is not None:
        problems.append(f"top_db {extractor.top_db} (needs None)")
    if getattr(extractor, "mel_filters_slaney", None) is None:
        problems.append("no mel_filters_slaney")
    if problems:
        raise ValueError("this ONNX runtime computes only the unfused CLAP checkpoints' log-mel features, and this "
                         f"feature extractor has {', '.join(problems)}: keep the torch audio tower for it.")


def export_clap_audio(model, processor, folder: Path, precision: str) -> None:
    """Write CLAP's audio tower into `folder` (existing, empty) for OnnxClapAudio.load.

    `model` is ClapAudioModelWithProjection in fp32 (transformers' attention or models.py's fused one),
    `processor` its ClapProcessor, whose feature extractor must be an unfused checkpoint's (ValueError otherwise).
    "fp32" keeps every weight in fp32; "int8" stores the MatMul weights as 8-bit blocks (MatMulNBits, int8
    compute), a third faster per window on a 2-core AVX2 CPU and a quarter of the file. The export embeds probe
    windows with torch and with the written model and raises OnnxClapError if a cosine falls below
    MIN_COSINE[precision].
    """
    import torch

    _check_precision(precision)
    extractor = processor.feature_extractor
    _check_unfused_extractor(extractor)
    if getattr(model.config, "enable_fusion", False):
        raise ValueError("this ONNX runtime exports only unfused CLAP audio towers (enable_fusion is set)")
    folder = Path(folder)
    frames = 1 + extractor.nb_max_samples // extractor.hop_length
    mels = extractor.feature_size
    sample = torch.zeros(2, 1, frames, mels)
    _export_onnx(_audio_tower(model), (sample,), folder / AUDIO_MODEL, ["input_features"], "audio_embeds",
                 {"input_features": {0: "batch"}, "audio_embeds": {0: "batch"}})
    if precision == "int8":
        _quantize_matmul_weights(folder / AUDIO_MODEL)
    np.save(folder / AUDIO_MEL_FILTERS, np.asarray(extractor.mel_filters_slaney, dtype=np.float32))
    _write_json(folder / AUDIO_CONFIG, {
        "format_version": FORMAT_VERSION, "precision": precision,
        "dim": int(model.config.projection_dim), "sampling_rate": int(extractor.sampling_rate),
        "window_samples": int(extractor.nb_max_samples), "fft_window_size": int(extractor.fft_window_size),
        "hop_length": int(extractor.hop_length), "frames": int(frames), "mels": int(mels),
    })

    # Probe windows: a chord with a slow tremolo over quiet noise, deterministic, so the check is the same each time.
    rng = np.random.default_rng(0)
    seconds = np.arange(extractor.nb_max_samples) / extractor.sampling_rate
    chord = sum(np.sin(2 * np.pi * f * seconds) for f in (220.0, 277.2, 329.6)) * (0.6 + 0.4 * np.sin(seconds))
    windows = np.stack([0.2 * chord + 0.01 * rng.standard_normal(len(seconds)),
                        0.05 * rng.standard_normal(len(seconds))]).astype(np.float32)
    audio = OnnxClapAudio.load(folder)
    features = log_mel_features(windows, audio.mel_filters, audio.fft_window_size, audio.hop_length)
    with torch.inference_mode():
        expected = model(input_features=torch.from_numpy(features)).audio_embeds.numpy()
    cosines = _cosines(audio.embed_windows(windows), expected)
    if cosines.min() < MIN_COSINE[precision]:
        raise OnnxClapError(f"the {precision} audio tower's vectors differ from torch's (cosine {cosines.min():.6f} "
                            f"< {MIN_COSINE[precision]}); use precision 'fp32'.")
