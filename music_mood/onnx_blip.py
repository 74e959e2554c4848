"""BLIP on ONNX Runtime, torch-free: OnnxBlip runs what onnx_blip_export.export_blip wrote.

export_blip writes three graphs and what the runtime needs besides them into one folder:

- vision.onnx: pixel_values float32 (B, 3, H, W) -> last_hidden_state float32 (B, P, E), BLIP's vision tower.
- cross.onnx: image_features float32 (1, P, E) -> cross_key_<i>, cross_value_<i> float32 (1, heads, P, head_dim)
  for every decoder layer i: the decoder's keys/values over the image, computed once per photo.
- decoder.onnx: input_ids int64 (B, T), past_key_<i>/past_value_<i> float32 (B, heads, past, head_dim) (past may
  be 0), cross_key_<i>/cross_value_<i> (1, heads, P, head_dim) -> logits float32 (B, T, vocab),
  last_hidden_state float32 (B, T, hidden), present_key_<i>/present_value_<i> (B, heads, past + T, head_dim).
- tokenizer.json (the Rust tokenizer's own file) and blip.json (special ids, image preprocessing constants,
  dimensions, precision).

OnnxBlip.load reads only that folder: importing this module or running OnnxBlip imports neither torch nor
transformers (numpy, PIL, onnxruntime and tokenizers only).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from music_mood.ort import onnx_session

PRECISIONS = ("fp32", "int8")
CONFIG_FILE = "blip.json"
TOKENIZER_FILE = "tokenizer.json"
VISION_FILE, CROSS_FILE, DECODER_FILE = "vision.onnx", "cross.onnx", "decoder.onnx"
FORMAT_VERSION = 1


class OnnxExportError(RuntimeError):
    """A folder could not be read as an exported BLIP; the message says what is wrong and what to do."""


def _clean_up_tokenization(text: str) -> str:
    """transformers' clean_up_tokenization (PreTrainedTokenizerBase), for checkpoints that ask for it."""
    for before, after in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                          (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(before, after)
    return text


@dataclass(frozen=True)
class _Graphs:
    vision: object
    cross: object
    decoder: object


class OnnxBlip:
    """BLIP (BlipForConditionalGeneration) exported by export_blip, run by ONNX Runtime on the CPU.

    `cross` (from cross_attention) is a tuple of float32 arrays, each (1, heads, patches, head_dim): every layer's
    key then value. `past` (from decode) is a tuple of float32 arrays, each (B, heads, length, head_dim), in the
    same order; None stands for the empty past.
    """

    # The vision tower costs the same CPU time per photo one at a time as in batches of 4 or 8 here (1.21, 1.21,
    # 1.26 s on full-size BLIP, 8-bit, 2 cores: benchmarks/bench_vision_batch.py), so describe.describe_pixels
    # runs it photo by photo, keeping only one photo's activations at a time.
    vision_batch_size = 1

    def __init__(self, folder: Path, config: dict, graphs: _Graphs, tokenizer):
        self.folder = folder
        self.config = config
        self.precision: str = config["precision"]
        self.bos_token_id: int = config["bos_token_id"]
        self.sep_token_id: int = config["sep_token_id"]
        self.pad_token_id: int = config["pad_token_id"]
        self.image_size: tuple[int, int] = (config["image"]["height"], config["image"]["width"])
        self._graphs = graphs
        self._tokenizer = tokenizer
        self._layers, self._heads, self._head_dim = config["num_layers"], config["num_heads"], config["head_dim"]
        self._cross_names = [f"cross_{kind}_{i}" for i in range(self._layers) for kind in ("key", "value")]
        self._past_names = [f"past_{kind}_{i}" for i in range(self._layers) for kind in ("key", "value")]
        self._present_names = [f"present_{kind}_{i}" for i in range(self._layers) for kind in ("key", "value")]

    @classmethod
    def load(cls, folder: Path, threads: int | None = None) -> OnnxBlip:
        """The BLIP that export_blip wrote into `folder`; `threads`: ORT's intra-op threads (None: its default)."""
        from tokenizers import Tokenizer

        folder = Path(folder)
        try:
            config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise OnnxExportError(f"{folder} holds no readable exported BLIP ({CONFIG_FILE}: {e}); "
                                  f"export it again with export_blip.") from e
        if config.get("format_version") != FORMAT_VERSION:
            raise OnnxExportError(f"{folder} was exported in format {config.get('format_version')}, this code reads "
                                  f"{FORMAT_VERSION}; export it again with export_blip.")
        graphs = _Graphs(*(onnx_session(folder / name, threads) for name in (VISION_FILE, CROSS_FILE, DECODER_FILE)))
        return cls(folder, config, graphs, Tokenizer.from_file(str(folder / TOKENIZER_FILE)))

    def cache_key(self) -> dict:
        """What results derived from this model alone (the mood baseline) depend on: the export (its folder's name
        is the hash of the checkpoint, precision and library versions) and the runtime's version."""
        import onnxruntime

        return {"export": self.folder.name, "onnxruntime": onnxruntime.__version__}

    # ------------------------------------------------------------------------------------------------ image

    def pixel_values(self, image) -> np.ndarray:
        """What the vision tower sees of a PIL image: float32 (1, 3, H, W), as BlipImageProcessor(Pil) makes it
        (RGB with transparency over white, bicubic resize, rescale, normalise)."""
        from PIL import Image

        spec = self.config["image"]
        if spec["do_convert_rgb"]:
            if "A" in image.getbands() or image.info.get("transparency") is not None:
                image = image.convert("RGBA")
                background = Image.new("RGBA", image.size, (255, 255, 255, 255))
                image = Image.alpha_composite(background, image).convert("RGB")
            else:
                image = image.convert("RGB")
        height, width = self.image_size
        pixels = np.asarray(image.resize((width, height), resample=spec["resample"]))
        if spec["do_rescale"]:
            pixels = (pixels.astype(np.float64) * spec["rescale_factor"]).astype(np.float32)
        if spec["do_normalize"]:
            pixels = pixels.astype(np.float32, copy=False)
            pixels = (pixels - np.array(spec["image_mean"], np.float32)) / np.array(spec["image_std"], np.float32)
        return np.ascontiguousarray(pixels.transpose(2, 0, 1)[None], dtype=np.float32)

    def image_features(self, pixel_values: np.ndarray) -> np.ndarray:
        """BLIP's vision tower: pixel_values float32 (B, 3, H, W) -> float32 (B, patches + 1, hidden)."""
        return self._graphs.vision.run(None, {"pixel_values": np.asarray(pixel_values, np.float32)})[0]

    def cross_attention(self, features: np.ndarray) -> tuple[np.ndarray, ...]:
        """Every decoder layer's cross-attention key and value over one image's features (1, P, hidden): a tuple
        of 2 x layers float32 arrays (1, heads, P, head_dim). Computed once per photo, then given to decode."""
        return tuple(self._graphs.cross.run(None, {"image_features": np.asarray(features, np.float32)}))

    # ---------------------------------------------------------------------------------------------- decoder

    def _run_decoder(self, ids, cross, past, outputs):
        ids = np.asarray(ids, dtype=np.int64)
        if ids.ndim != 2:
            raise ValueError(f"ids must be (batch, tokens), got shape {ids.shape}")
        past_length = 0 if past is None else past[0].shape[2]
        if past_length + ids.shape[1] > self.config["max_positions"]:
            raise ValueError(f"{past_length} past + {ids.shape[1]} new tokens exceed BLIP's "
                             f"{self.config['max_positions']} positions")
        if past is None:
            empty = np.zeros((ids.shape[0], self._heads, 0, self._head_dim), np.float32)
            past = (empty,) * (2 * self._layers)
        feeds = {"input_ids": ids, **dict(zip(self._past_names, past)), **dict(zip(self._cross_names, cross))}
        return self._graphs.decoder.run(outputs, feeds)

    def decode(self, ids: np.ndarray, cross, past=None) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        """The text decoder on new tokens `ids` int64 (B, T) after `past` (None: none) over the image whose
        `cross` this is (batch 1, broadcast over B). Returns logits float32 (B, T, vocab) for every new position
        and the new past (self-attention keys/values including these T tokens). Positions continue from the past
        length; each new token sees the past and the new tokens up to itself."""
        logits, *present = self._run_decoder(ids, cross, past, ["logits", *self._present_names])
        return logits, tuple(present)

    def last_hidden_state(self, ids: np.ndarray, cross, past=None) -> np.ndarray:
        """As decode, but the decoder's last hidden state float32 (B, T, hidden), before the LM head."""
        return self._run_decoder(ids, cross, past, ["last_hidden_state"])[0]

    def repeat(self, past, n: int) -> tuple[np.ndarray, ...]:
        """A batch-1 past repeated to batch n (for a batch of continuations of one prefix)."""
        return tuple(np.repeat(array, n, axis=0) for array in past)

    # -------------------------------------------------------------------------------------------- tokenizer

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` without special tokens, as tokenizer(text, add_special_tokens=False).input_ids."""
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def decode_tokens(self, ids) -> str:
        """Text of token ids, as tokenizer.decode(ids, skip_special_tokens=True).strip()."""
        text = self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)
        if self.config["clean_up_tokenization_spaces"]:
            text = _clean_up_tokenization(text)
        return text.strip()
