"""CLAP on ONNX Runtime, torch-free: OnnxClapText and OnnxClapAudio run what onnx_clap_export wrote.

export_clap_text / export_clap_audio (onnx_clap_export.py) write into a folder all that OnnxClapText /
OnnxClapAudio need: the tower as ONNX, its tokenizer or mel filter bank, and a JSON file of constants. Loading and
running those classes imports only numpy, onnxruntime and tokenizers.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

from music_mood.ort import onnx_session

PRECISIONS = ("fp32", "int8")
FORMAT_VERSION = 1
WINDOWS_PER_RUN = 8  # windows per ORT run, as embed.embed_windows batches them
TEXT_MODEL, TEXT_CONFIG, TEXT_TOKENIZER = "clap_text.onnx", "clap_text.json", "clap_text_tokenizer.json"
AUDIO_MODEL, AUDIO_CONFIG, AUDIO_MEL_FILTERS = "clap_audio.onnx", "clap_audio.json", "clap_audio_mel_filters.npy"


class OnnxClapError(RuntimeError):
    """An export folder cannot be loaded, or an export failed its fidelity check; the message says what to do."""


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    """float32 (n, D) rows scaled to unit length, as torch.nn.functional.normalize (norms clamped at 1e-12)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def _read_config(folder: Path, name: str, files: tuple[str, ...]) -> dict:
    """The export's JSON constants, after checking the folder holds every file the runtime needs."""
    folder = Path(folder)
    missing = [file for file in (name, *files) if not (folder / file).is_file()]
    if missing:
        raise OnnxClapError(f"{folder} is not a complete CLAP ONNX export (missing {', '.join(missing)}); "
                            f"export it again with music_mood.onnx_clap_export.")
    config = json.loads((folder / name).read_text(encoding="utf-8"))
    if config.get("format_version") != FORMAT_VERSION:
        raise OnnxClapError(f"{folder / name} has format version {config.get('format_version')}, this runtime reads "
                            f"{FORMAT_VERSION}; export it again with this version of music_mood.onnx_clap_export.")
    return config


class OnnxClapText:
    """CLAP's text tower on ONNX Runtime: texts → float32 (n, dim) unit vectors, as query.embed_text gives them."""

    def __init__(self, session, tokenizer, config: dict):
        self.session, self.tokenizer, self.config = session, tokenizer, config
        self.dim: int = config["dim"]
        self.precision: str = config["precision"]

    @classmethod
    def load(cls, folder: Path, threads: int | None = None) -> OnnxClapText:
        """The text tower exported into `folder` by export_clap_text, on `threads` intra-op threads."""
        from tokenizers import Tokenizer

        folder = Path(folder)
        config = _read_config(folder, TEXT_CONFIG, (TEXT_MODEL, TEXT_TOKENIZER))
        tokenizer = Tokenizer.from_file(str(folder / TEXT_TOKENIZER))
        # What the transformers tokenizer does with padding=True, truncation=True, max_length=...: truncate each
        # text (special tokens included) to max_length, then pad the batch to its longest text.
        tokenizer.enable_truncation(config["max_length"], direction=config["truncation_side"])
        tokenizer.enable_padding(direction=config["padding_side"], pad_id=config["pad_id"],
                                 pad_token=config["pad_token"])
        return cls(onnx_session(folder / TEXT_MODEL, threads), tokenizer, config)

    def tokenize(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """input_ids and attention_mask, int64 (n, longest text's tokens, at most max_length)."""
        encodings = self.tokenizer.encode_batch(list(texts))
        return (np.array([e.ids for e in encodings], dtype=np.int64),
                np.array([e.attention_mask for e in encodings], dtype=np.int64))

    def embed_text(self, texts: list[str]) -> np.ndarray:
        """CLAP text embeddings: float32 (n, dim), each row L2-normalised."""
        if len(texts) == 0:
            return np.zeros((0, self.dim), np.float32)
        input_ids, attention_mask = self.tokenize(texts)
        embeds = self.session.run(None, {"input_ids": input_ids, "attention_mask": attention_mask})[0]
        return normalize_rows(embeds)


# --------------------------------------------------------------------------------------------------------- audio


def log_mel_features(windows: np.ndarray, mel_filters: np.ndarray, fft_window_size: int,
                     hop_length: int) -> np.ndarray:
    """The audio tower's input for windows float32 (B, N): float32 (B, 1, 1 + N // hop_length, mels), in dB.

    Mirrors embed.log_mel_features (ClapFeatureExtractor with mel_filters_slaney, `mel_filters` float32
    (fft_window_size // 2 + 1, mels)): periodic Hann window, frames centred with reflect padding, power spectrum,
    then 10 * log10(max(mel, 1e-10)). All in float32, as embed's torch.stft: within 4e-4 dB of the extractor's
    float64 on real music, in values spanning -100..+25 dB.
    """
    windows = np.asarray(windows, dtype=np.float32)
    if windows.shape[1] <= fft_window_size // 2:
        raise ValueError(f"windows must be longer than {fft_window_size // 2} samples, got {windows.shape[1]}")
    half = fft_window_size // 2
    # np.pad(mode="reflect"), spelled out: a third of its time.
    padded = np.concatenate([windows[:, half:0:-1], windows, windows[:, -2:-half - 2:-1]], axis=1)
    frames = np.lib.stride_tricks.sliding_window_view(padded, fft_window_size, axis=1)[:, ::hop_length]
    hann = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(fft_window_size) / fft_window_size)).astype(np.float32)
    spectrum = np.fft.rfft(frames * hann, axis=-1)  # complex64: numpy >= 2 keeps float32 input in float32
    power = spectrum.real ** 2 + spectrum.imag ** 2
    # One 2-D product: numpy's batched 3-D matmul is four times slower here. On one BLAS thread: OpenBLAS splits a
    # product by its thread count, which changes the rounding, and the int8 model after it turned that into
    # vectors 1e-4 apart between a 2-thread build and a Ray worker (OMP_NUM_THREADS=1). One thread, same vectors.
    with _numpy_blas().limit(limits=1, user_api="blas"):
        mel = (power.reshape(-1, power.shape[-1]) @ mel_filters).reshape(*power.shape[:2], mel_filters.shape[1])
    return (10 * np.log10(np.maximum(mel, 1e-10)))[:, None]


@functools.lru_cache(maxsize=1)
def _numpy_blas():
    """The process's BLAS thread pools (NumPy's OpenBLAS), found once."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()



class OnnxClapAudio:
    """CLAP's audio tower on ONNX Runtime: exact-length windows → float32 (B, dim) unit vectors, as
    embed.embed_windows gives them."""

    def __init__(self, session, mel_filters: np.ndarray, config: dict, windows_per_run: int = WINDOWS_PER_RUN):
        if windows_per_run < 1:
            raise ValueError(f"windows_per_run must be at least 1, not {windows_per_run}")
        self.session, self.mel_filters, self.config = session, mel_filters, config
        self.windows_per_run = windows_per_run
        self.dim: int = config["dim"]
        self.sampling_rate: int = config["sampling_rate"]
        self.window_samples: int = config["window_samples"]
        self.fft_window_size: int = config["fft_window_size"]
        self.hop_length: int = config["hop_length"]

    @classmethod
    def load(cls, folder: Path, threads: int | None = None,
             windows_per_run: int = WINDOWS_PER_RUN) -> OnnxClapAudio:
        """The audio tower exported into `folder` by export_clap_audio, on `threads` intra-op threads; at most
        `windows_per_run` windows go through the model at once."""
        folder = Path(folder)
        config = _read_config(folder, AUDIO_CONFIG, (AUDIO_MODEL, AUDIO_MEL_FILTERS))
        mel_filters = np.load(folder / AUDIO_MEL_FILTERS)
        if mel_filters.shape != (config["fft_window_size"] // 2 + 1, config["mels"]):
            raise OnnxClapError(f"{folder / AUDIO_MEL_FILTERS} has shape {mel_filters.shape}, not "
                                f"({config['fft_window_size'] // 2 + 1}, {config['mels']}); export it again.")
        return cls(onnx_session(folder / AUDIO_MODEL, threads, arena=True), mel_filters, config, windows_per_run)

    def embed_windows(self, windows: np.ndarray) -> np.ndarray:
        """CLAP audio embeddings of windows float32 (B, window_samples): float32 (B, dim), rows L2-normalised.

        A window's vector does not depend on the others in its run, beyond float rounding.
        """
        windows = np.asarray(windows, dtype=np.float32)
        if windows.ndim != 2 or windows.shape[1] != self.window_samples:
            raise ValueError(f"windows must be (B, {self.window_samples}) samples, got shape {windows.shape}")
        out = [np.zeros((0, self.dim), np.float32)]
        for start in range(0, len(windows), self.windows_per_run):
            features = log_mel_features(windows[start:start + self.windows_per_run], self.mel_filters,
                                        self.fft_window_size, self.hop_length)
            out.append(normalize_rows(self.session.run(None, {"input_features": features})[0]))
        return np.concatenate(out)
