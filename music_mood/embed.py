"""The mapper: a decoded track → full 10 s windows → CLAP audio vectors (one per window, and the track's mean)."""
from __future__ import annotations

import math

import numpy as np

from music_mood.audio import AudioError

WINDOWS_PER_BATCH = 8


def split_windows(audio: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Full `window`-sample windows covering the whole track: (W, window) float32, the share of new audio each
    window adds (W,) float64, and where each starts, in samples (W,) int64.

    Window j starts at j * window, except the last, which ends at the track's end, overlapping the one before it:
    every window is music, never zero padding (whose window would be a poor best moment and a pull towards
    silence). It adds (len - (W-1) * window) / window of new audio. A track shorter than one window is repeated
    to fill it, as CLAP's repeatpad.
    """
    if len(audio) == 0:
        raise AudioError("zero-length audio")
    if len(audio) < window:
        repeated = np.tile(audio, math.ceil(window / len(audio)))[:window]
        return repeated[None, :].astype(np.float32), np.ones(1), np.zeros(1, np.int64)
    count = math.ceil(len(audio) / window)
    starts = np.arange(count, dtype=np.int64) * window
    starts[-1] = len(audio) - window
    windows = np.stack([audio[start:start + window] for start in starts]).astype(np.float32, copy=False)
    share = np.minimum(1.0, (len(audio) - np.arange(count) * window) / window)
    return windows, share, starts


def embed_windows(clap, windows: np.ndarray) -> np.ndarray:
    """CLAP audio embeddings of exact-length windows: float32 (W, D), rows L2-normalised.

    Windows are exactly the feature extractor's max length, so its random crop (rand_trunc) never fires: the same
    audio gives the same vectors on every run. Batches hold windows of one track only, for the same reason.
    """
    runtime = clap.runtime
    if windows.shape[1] != runtime.window_samples:
        raise ValueError(f"windows must be {runtime.window_samples} samples, got {windows.shape[1]}")
    out = [runtime.embed_windows(windows[start:start + WINDOWS_PER_BATCH])
           for start in range(0, len(windows), WINDOWS_PER_BATCH)]
    return np.concatenate(out).astype(np.float32)


def embed_track(clap, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Mapper: one track → (track vector float32 (D,), window vectors float32 (W, D), last window's start in s).

    Vectors are unit-length. The track vector is the mean of the window vectors weighted by the new audio each
    window adds, so the last window, which overlaps the one before it, counts only for the music it adds.
    """
    runtime = clap.runtime
    windows, share, starts = split_windows(audio, runtime.window_samples)
    segments = embed_windows(clap, windows)
    mean = (segments * share[:, None]).sum(axis=0)
    return (mean / np.linalg.norm(mean)).astype(np.float32), segments, float(starts[-1] / runtime.sampling_rate)
