"""BLIP's export from transformers to ONNX (onnx_blip.py holds the format and its torch-free runtime): the vision
tower, the decoder's cross-attention keys/values and the text decoder as three graphs, 8-bit weights for "int8".
torch, transformers and onnx are imported inside the functions, so importing this module costs nothing.
"""
from __future__ import annotations

import functools
import json
import math
from pathlib import Path

from music_mood.onnx_blip import (
    CONFIG_FILE,
    CROSS_FILE,
    DECODER_FILE,
    FORMAT_VERSION,
    PRECISIONS,
    TOKENIZER_FILE,
    VISION_FILE,
)
from music_mood.torch_runtime import vision_features_module

OPSET = 17
# MatMulNBits settings for precision "int8", from benchmarks/bench_onnx_blip.py on full-size BLIP (2-core AVX2):
# accuracy_level 4 (int8 activations) is the only fast kernel here; level 0 (fp32 activations) made a decoder
# step ~27x slower (488 ms vs 18 ms, 1 thread). Blocks of 32 rather than 128 cut the teacher-forced logit error
# (RMS / logits' std 0.020 vs 0.026, max 0.094 vs 0.129; hidden state 0.016 vs 0.020) for 13 MB and 3-18 % of
# a step (18.2 vs 14.9 ms in one run, 18.5 vs 17.9 in another; ~0.1 s over a 30-token caption, against 1.4 s of
# vision): fidelity is the scarcer of the two. Asymmetric blocks gained nothing measurable.
INT8_BLOCK_SIZE = 32
INT8_SYMMETRIC = True
INT8_ACCURACY_LEVEL = 4


def export_blip(model, processor, folder: Path, precision: str, *, block_size: int = INT8_BLOCK_SIZE,
                symmetric: bool = INT8_SYMMETRIC, accuracy_level: int = INT8_ACCURACY_LEVEL) -> None:
    """Write into `folder` (an existing, empty temp folder; the caller renames it into place) everything
    OnnxBlip.load needs: the three graphs, tokenizer.json and blip.json.

    model: BlipForConditionalGeneration, fp32, eval. processor: its BlipProcessor. precision "fp32": all graphs
    fp32. "int8": the text decoder's MatMul weights (self- and cross-attention, FFN, LM head; in decoder.onnx and
    cross.onnx) 8-bit weight-only (MatMulNBits, see INT8_BLOCK_SIZE), its word embeddings int8 per row (a Gather
    cannot read MatMulNBits weights, and fp32 embeddings would be the largest tensor left); the vision tower's
    MatMul weights 8-bit too (1.25x faster and 244 MB smaller on an AVX-512 VNNI CPU; on the full-size model its
    features stay within cosine 0.9998 per token and move the logits by 0.023 of their std).
    block_size, symmetric, accuracy_level: MatMulNBits' settings for "int8" (the defaults are the chosen ones;
    the benchmark varies them).
    """
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    folder = Path(folder)
    model.eval()
    text_config, vision_config = model.config.text_config, model.config.vision_config
    size = processor.image_processor.size
    height, width = size["height"], size["width"]
    with torch.inference_mode(False), torch.no_grad():
        _export_vision(model.vision_model, folder / VISION_FILE, height, width)
        decoder = model.text_decoder
        _export_cross(decoder, folder / CROSS_FILE, vision_config.hidden_size)
        _export_decoder(decoder, folder / DECODER_FILE, quantize_embeddings=precision == "int8")
    if precision == "int8":
        for name in (VISION_FILE, CROSS_FILE, DECODER_FILE):
            _quantize_matmuls(folder / name, block_size, symmetric, accuracy_level)

    tokenizer = processor.tokenizer
    (folder / TOKENIZER_FILE).write_text(tokenizer.backend_tokenizer.to_str(), encoding="utf-8")
    image_processor = processor.image_processor
    config = {
        "format_version": FORMAT_VERSION,
        "precision": precision,
        "int8": {"block_size": block_size, "symmetric": symmetric, "accuracy_level": accuracy_level}
        if precision == "int8" else None,
        "bos_token_id": text_config.bos_token_id,
        "sep_token_id": text_config.sep_token_id,
        "pad_token_id": text_config.pad_token_id,
        "vocab_size": text_config.vocab_size,
        "num_layers": text_config.num_hidden_layers,
        "num_heads": text_config.num_attention_heads,
        "head_dim": text_config.hidden_size // text_config.num_attention_heads,
        "max_positions": text_config.max_position_embeddings,
        "clean_up_tokenization_spaces": bool(tokenizer.clean_up_tokenization_spaces),
        "image": {
            "height": height,
            "width": width,
            "do_convert_rgb": bool(image_processor.do_convert_rgb),
            "resample": int(image_processor.resample),
            "do_rescale": bool(image_processor.do_rescale),
            "rescale_factor": float(image_processor.rescale_factor),
            "do_normalize": bool(image_processor.do_normalize),
            "image_mean": [float(x) for x in image_processor.image_mean],
            "image_std": [float(x) for x in image_processor.image_std],
        },
    }
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=1), encoding="utf-8")


def _export(module, args, path: Path, input_names, output_names, dynamic_axes) -> None:
    import warnings

    import torch

    with warnings.catch_warnings():
        # The legacy exporter announces its deprecation, and tracing warns of shapes read as Python ints, which
        # the dynamic_axes make symbolic in the graph (the tests run the graphs at other sizes than traced).
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(module, args, str(path), input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic_axes, opset_version=OPSET, do_constant_folding=True, dynamo=False)


def _export_vision(vision_model, path: Path, height: int, width: int) -> None:
    import torch

    _export(vision_features_module(vision_model), (torch.zeros(1, 3, height, width),), path, ["pixel_values"],
            ["last_hidden_state"], {"pixel_values": {0: "batch"}, "last_hidden_state": {0: "batch"}})


def _export_cross(text_decoder, path: Path, encoder_hidden_size: int) -> None:
    """cross.onnx: only the cross-attention key/value projections of every layer, so decoder.onnx holds none."""
    import torch

    layers = text_decoder.bert.encoder.layer
    heads = text_decoder.config.num_attention_heads

    class Cross(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.attentions = torch.nn.ModuleList(layer.crossattention.self for layer in layers)

        def forward(self, features):
            out = []
            for attention in self.attentions:
                for projection in (attention.key, attention.value):
                    kv = projection(features)
                    out.append(kv.reshape(kv.shape[0], kv.shape[1], heads, -1).transpose(1, 2))
            return tuple(out)

    names = [f"cross_{kind}_{i}" for i in range(len(layers)) for kind in ("key", "value")]
    axes = {"image_features": {1: "patches"}, **{name: {2: "patches"} for name in names}}
    _export(Cross(), (torch.zeros(1, 5, encoder_hidden_size),), path, ["image_features"], names, axes)


def _attend(query, key, value, mask, heads: int, head_dim: int):
    """Scaled dot-product attention as BLIP's text layers compute it: scores q·k/sqrt(head_dim) plus `mask` (None:
    none), softmax, then the values; (B, heads, T, head_dim) in, (B, T, heads * head_dim) out."""
    import torch

    scores = torch.matmul(query, key.transpose(-1, -2)) / math.sqrt(head_dim)
    if mask is not None:
        scores = scores + mask
    context = torch.matmul(torch.softmax(scores, dim=-1), value).transpose(1, 2)
    return context.reshape(context.shape[0], context.shape[1], heads * head_dim)


def _split_heads(x, heads: int, head_dim: int):
    """(B, T, hidden) -> (B, heads, T, head_dim)."""
    return x.reshape(x.shape[0], x.shape[1], heads, head_dim).transpose(1, 2)


def _decoder_module(text_decoder, quantize_embeddings: bool):
    """An explicit torch module over BlipTextLMHeadModel's weights with the cache as plain tensors (what an ONNX
    graph can take): forward(input_ids, *past, *cross) -> (logits, last_hidden_state, *present).

    The math is modeling_blip_text's: absolute positions continuing from the past length, post-LayerNorm layers
    (self-attention, cross-attention, FFN) whose Linear/LayerNorm/activation modules are the model's own, scores
    q·k/sqrt(head_dim), a causal mask within the new tokens, and the LM head (transform, then the word
    embeddings' transpose plus bias). The cross keys/values have batch 1 and broadcast over the batch.
    """
    import torch

    bert, head = text_decoder.bert, text_decoder.cls.predictions
    embeddings, layers = bert.embeddings, bert.encoder.layer
    config = text_decoder.config
    heads, head_dim = config.num_attention_heads, config.hidden_size // config.num_attention_heads
    word = embeddings.word_embeddings.weight
    output_weight = head.decoder.weight
    attend = functools.partial(_attend, heads=heads, head_dim=head_dim)
    split = functools.partial(_split_heads, heads=heads, head_dim=head_dim)

    class Decoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = layers
            self.position_embeddings = embeddings.position_embeddings
            self.embedding_norm = embeddings.LayerNorm
            self.transform = head.transform
            # (hidden, vocab): the LM head's MatMul weight. When tied to the word embeddings (BLIP's are), the
            # embedding lookup gathers its columns, so the graph holds the 30k x 768 table once.
            self.output_weight = torch.nn.Parameter(output_weight.detach().t().contiguous(), requires_grad=False)
            self.output_bias = head.decoder.bias
            self.tied = word.data_ptr() == output_weight.data_ptr() and not quantize_embeddings
            if quantize_embeddings:
                scale = word.detach().abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 127
                self.register_buffer("word_int8", torch.round(word.detach() / scale).to(torch.int8))
                self.register_buffer("word_scale", scale)
            elif not self.tied:
                self.word_embeddings = embeddings.word_embeddings

        def embed(self, input_ids):
            if hasattr(self, "word_int8"):
                return self.word_int8[input_ids].float() * self.word_scale[input_ids]
            if self.tied:
                flat = self.output_weight.index_select(1, input_ids.reshape(-1)).t()
                return flat.reshape(input_ids.shape[0], input_ids.shape[1], -1)
            return self.word_embeddings(input_ids)

        def forward(self, input_ids, *cache):
            count = len(self.layers)
            past, cross = cache[:2 * count], cache[2 * count:]
            new, past_length = input_ids.shape[1], past[0].shape[2]
            positions = torch.arange(new) + past_length
            hidden = self.embedding_norm(self.embed(input_ids) + self.position_embeddings(positions)[None])
            # (T, past + T): token t sees every past position and the new ones up to itself.
            mask = torch.where(torch.arange(past_length + new)[None, :] > positions[:, None],
                               torch.finfo(torch.float32).min, 0.0)
            present = []
            for i, layer in enumerate(self.layers):
                attention = layer.attention.self
                key = torch.cat([past[2 * i], split(attention.key(hidden))], dim=2)
                value = torch.cat([past[2 * i + 1], split(attention.value(hidden))], dim=2)
                present += [key, value]
                context = attend(split(attention.query(hidden)), key, value, mask)
                hidden = layer.attention.output(context, hidden)
                crossing = layer.crossattention.self
                context = attend(split(crossing.query(hidden)), cross[2 * i], cross[2 * i + 1], None)
                hidden = layer.crossattention.output(context, hidden)
                hidden = layer.output(layer.intermediate(hidden), hidden)
            logits = torch.matmul(self.transform(hidden), self.output_weight) + self.output_bias
            return (logits, hidden, *present)

    return Decoder().eval()


def _export_decoder(text_decoder, path: Path, quantize_embeddings: bool) -> None:
    import torch

    config = text_decoder.config
    count, heads = config.num_hidden_layers, config.num_attention_heads
    head_dim = config.hidden_size // heads
    module = _decoder_module(text_decoder, quantize_embeddings)
    # Example inputs with a non-empty past and batch 2, so no size is traced as a constant.
    past = [torch.zeros(2, heads, 3, head_dim) for _ in range(2 * count)]
    cross = [torch.zeros(1, heads, 5, head_dim) for _ in range(2 * count)]
    ids = torch.zeros(2, 4, dtype=torch.int64)
    past_names = [f"past_{kind}_{i}" for i in range(count) for kind in ("key", "value")]
    cross_names = [f"cross_{kind}_{i}" for i in range(count) for kind in ("key", "value")]
    present_names = [f"present_{kind}_{i}" for i in range(count) for kind in ("key", "value")]
    axes = {"input_ids": {0: "batch", 1: "new"}, "logits": {0: "batch", 1: "new"},
            "last_hidden_state": {0: "batch", 1: "new"},
            **{name: {0: "batch", 2: "past"} for name in past_names},
            **{name: {2: "patches"} for name in cross_names},
            **{name: {0: "batch", 2: "total"} for name in present_names}}
    _export(module, (ids, *past, *cross), path, ["input_ids", *past_names, *cross_names],
            ["logits", "last_hidden_state", *present_names], axes)


def _quantize_matmuls(path: Path, block_size: int, symmetric: bool, accuracy_level: int) -> None:
    """Replace every MatMul with a constant weight in the graph at `path` by an 8-bit weight-only MatMulNBits."""
    import logging

    import onnx

    root = logging.getLogger()
    root_handlers, root_level = list(root.handlers), root.level
    from onnxruntime.quantization import matmul_nbits_quantizer

    # Importing it runs logging.basicConfig(level=INFO), which would print every library's INFO records in this
    # process from then on, and the quantizer logs a line per node: undo the one, silence the other.
    root.handlers[:], root.level = root_handlers, root_level
    logger = logging.getLogger(matmul_nbits_quantizer.__name__)
    logger_level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        config = matmul_nbits_quantizer.DefaultWeightOnlyQuantConfig(
            block_size=block_size, is_symmetric=symmetric, accuracy_level=accuracy_level, bits=8)
        quantizer = matmul_nbits_quantizer.MatMulNBitsQuantizer(
            onnx.load(str(path)), bits=8, block_size=block_size, is_symmetric=symmetric,
            accuracy_level=accuracy_level, algo_config=config)
        quantizer.process()
    finally:
        logger.setLevel(logger_level)
    onnx.save(quantizer.model.model, str(path))
