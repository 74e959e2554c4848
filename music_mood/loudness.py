"""The soundtrack's loudness, as the streaming services measure it (ITU-R BS.1770-4 / EBU R128, by pyloudnorm):
each piece brought to one integrated loudness, the whole mix to its target, and its true peak kept under a ceiling
by a look-ahead limiter. mix.py calls these; nothing here decodes or encodes.

Why a limiter rather than less gain: music at -14 LUFS often has peaks above -1 dBTP (a quiet acoustic track lifted
to the target, two tracks summed in a cross-fade). Turning the whole soundtrack down until its loudest peak fits
would leave it several LU under the target; a limiter lowers only the few milliseconds around each such peak, with
a gain that ramps over LIMITER_RAMP_S, so the loudness moves by a fraction of a LU and nothing clips.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DEFAULT_LOUDNESS_LUFS = -14.0  # the streaming services' level (Spotify, YouTube, Tidal)
# What --loudness accepts: quieter than -40 LUFS is near inaudible at a normal volume; louder than -10 LUFS needs
# limiting that grows fast (asked for -8 LUFS, the sample library came out 0.8 LU short, within the promise barely).
MIN_LOUDNESS_LUFS, MAX_LOUDNESS_LUFS = -40.0, -10.0
TRUE_PEAK_DBTP = -1.0  # the promised ceiling (EBU R128, the services' delivery specs)
# What the limiter aims for: under the promise, since the AAC encoder's output, decoded, overshoots the samples it
# was given by a few tenths of a dB (benchmarks/RESULTS.md, "Soundtrack: one loudness"; encoding.keep_aac_true_peak).
LIMITER_CEILING_DBTP = -1.8
OVERSAMPLING = 4  # BS.1770-4 Annex 2: the true peak is the peak of the signal oversampled 4 times
LIMITER_RAMP_S = 0.01  # the limiter's gain falls over this before a peak, holds 2× this, and rises over this after
MAX_PIECE_GAIN_DB = 30.0  # a near-silent stretch is not lifted into its noise floor
LOUDNESS_ROUNDS = 3  # limiting lowers the loudness a little: gain again and limit again, up to this many times
LOUDNESS_TOLERANCE_LU = 0.2  # close enough to stop (the promise is ±1 LU)
LOUDNESS_CHUNK_S = 60.0  # audio measured at a time (integrated_loudness)
_CHUNK = 1 << 18  # samples oversampled at a time (the whole of a 30-minute mix at once would take 5 GB)
_MARGIN = 64  # samples of context each side of a chunk: longer than resample_poly's filter reaches


@dataclass(frozen=True)
class LoudnessFigures:
    """What a soundtrack measures: integrated loudness (LUFS, BS.1770-4 gated; -inf for silence) and true peak
    (dBTP; -inf for silence)."""

    integrated_lufs: float
    true_peak_dbtp: float


def check_loudness(lufs: float) -> float:
    """`lufs` if it is a loudness target a soundtrack can meet, else ValueError (one line, for any edge)."""
    if not (math.isfinite(lufs) and MIN_LOUDNESS_LUFS <= lufs <= MAX_LOUDNESS_LUFS):
        raise ValueError(f"the loudness must be between {MIN_LOUDNESS_LUFS:g} and {MAX_LOUDNESS_LUFS:g} LUFS, "
                         f"not {lufs:g}")
    return float(lufs)


def integrated_loudness(samples: np.ndarray, sample_rate: int, chunk_s: float = LOUDNESS_CHUNK_S) -> float:
    """BS.1770-4 integrated loudness of float (n, channels) or (n,) samples, in LUFS; -inf for silence. A stretch
    shorter than the meter's 400 ms block is measured repeated to that length.

    pyloudnorm's meter filters and measures the 400 ms blocks (its blockwise_loudness), chunk_s of audio at a time
    with a second of the audio before each chunk to settle its filters; the blocks' gates and mean (BS.1770-4
    eq. 5-7) are then taken over all of them. Its own integrated_loudness over a 30-minute mix at once would hold
    three copies of it (one in float64)."""
    import pyloudnorm

    samples = np.asarray(samples, dtype=np.float32)
    if not len(samples):
        return -math.inf
    block = math.ceil(0.4 * sample_rate) + 1
    if len(samples) < block:
        samples = np.resize(samples, (block, *samples.shape[1:]))
    meter = pyloudnorm.Meter(sample_rate)
    hop = round(0.1 * sample_rate)  # a block starts every 100 ms (75 % overlap), block j at j * hop
    per_chunk, settle = max(1, round(chunk_s * 10)), 10  # in hops
    count, blocks = _block_count(len(samples), sample_rate), []
    for first in range(0, count, per_chunk):
        lead = min(settle, first)  # the blocks measured before `first` only to settle the filters
        # The chunk's last block ends 3 hops after it starts; the last chunk takes the rest, as the meter would.
        end = len(samples) if first + per_chunk >= count else (first + per_chunk + 3) * hop
        meter.integrated_loudness(samples[(first - lead) * hop:end])
        blocks.extend(meter.blockwise_loudness[lead:lead + per_chunk])
    return _gated_mean(np.array(blocks, np.float64))


def _block_count(n: int, sample_rate: int) -> int:
    """How many 400 ms blocks pyloudnorm measures in n samples (as it counts them)."""
    return int(np.round((n / sample_rate - 0.4) / 0.1)) + 1


def _gated_mean(block_lufs: np.ndarray) -> float:
    """BS.1770-4 eq. 5-7 over the blocks' loudness: the mean power of the blocks above -70 LUFS and above the
    relative gate (10 LU under the mean of those above -70), as loudness; -inf when no block passes."""
    with np.errstate(divide="ignore"):
        power = 10 ** ((block_lufs + 0.691) / 10)  # sum over channels of G_i z_ij, which the blocks' loudness is
        loud = block_lufs >= -70.0
        if not loud.any():
            return -math.inf
        relative = -0.691 + 10 * np.log10(power[loud].mean()) - 10.0
        gated = (block_lufs > relative) & (block_lufs > -70.0)
        return float(-0.691 + 10 * np.log10(power[gated].mean())) if gated.any() else -math.inf


def true_peak_dbtp(samples: np.ndarray) -> float:
    """The true peak (BS.1770-4 Annex 2: the largest magnitude of the signal oversampled OVERSAMPLING times, of
    any channel) of float (n, channels) or (n,) samples, in dBTP; -inf for silence."""
    peak = float(sample_true_peaks(samples).max(initial=0.0))
    return 20 * math.log10(peak) if peak > 0 else -math.inf


def measure(samples: np.ndarray, sample_rate: int) -> LoudnessFigures:
    """The integrated loudness and true peak of `samples` (see LoudnessFigures)."""
    return LoudnessFigures(integrated_loudness(samples, sample_rate), true_peak_dbtp(samples))


def sample_true_peaks(samples: np.ndarray) -> np.ndarray:
    """float32 (n,): for each sample, the largest magnitude of the oversampled signal (any channel) from that
    sample up to the next. Oversampled by scipy's polyphase resampler, a chunk at a time."""
    from scipy.signal import resample_poly

    samples = np.asarray(samples, dtype=np.float32)
    samples = samples[:, None] if samples.ndim == 1 else samples
    n = len(samples)
    peaks = np.zeros(n, np.float32)
    for start in range(0, n, _CHUNK):
        end = min(start + _CHUNK, n)
        lo, hi = max(start - _MARGIN, 0), min(end + _MARGIN, n)
        up = resample_poly(samples[lo:hi], OVERSAMPLING, 1, axis=0)[(start - lo) * OVERSAMPLING:
                                                                      (end - lo) * OVERSAMPLING]
        up = np.abs(up.reshape(end - start, -1)).max(axis=1)  # a row: one sample's phases, of every channel
        # the samples themselves are on the oversampled signal, exactly (the filter's phase 0 nearly)
        peaks[start:end] = np.maximum(up, np.abs(samples[start:end]).max(axis=1))
    return peaks


class TruePeakMeter:
    """The true peak of a signal given a block at a time (a decoder's frames), never holding all of it: each block
    is oversampled with _MARGIN samples of its neighbours around it, so the result is sample_true_peaks' own."""

    def __init__(self):
        self.peak = 0.0
        self._held = np.zeros((0, 1), np.float32)  # not yet measured, after `_context` samples already measured
        self._context = 0

    def add(self, samples: np.ndarray) -> None:
        """Measure float (n, channels) samples next (the same channels every time)."""
        samples = np.asarray(samples, dtype=np.float32)
        samples = samples[:, None] if samples.ndim == 1 else samples
        self._held = np.concatenate([self._held, samples]) if len(self._held) else samples
        if len(self._held) - self._context >= _CHUNK:
            self._measure(final=False)

    def dbtp(self) -> float:
        """The true peak of all the samples added, in dBTP (-inf for silence)."""
        self._measure(final=True)
        return 20 * math.log10(self.peak) if self.peak > 0 else -math.inf

    def _measure(self, final: bool) -> None:
        end = len(self._held) if final else len(self._held) - _MARGIN
        if end > self._context:
            peaks = sample_true_peaks(self._held)[self._context:end]
            self.peak = max(self.peak, float(peaks.max(initial=0.0)))
        keep = max(end - _MARGIN, 0)
        self._held, self._context = self._held[keep:], end - keep


def piece_gains(bodies: list[np.ndarray], sample_rate: int, target_lufs: float) -> list[float]:
    """One linear gain per piece (its stretch, float (n, 2)) that brings its integrated loudness to
    `target_lufs`: pieces of loud and quiet tracks play at one loudness. Within ±MAX_PIECE_GAIN_DB; a silent piece
    keeps its level (1.0). Peaks this pushes over full scale are master_loudness's to limit."""
    limit = MAX_PIECE_GAIN_DB
    gains = []
    for body in bodies:
        level = integrated_loudness(body, sample_rate)
        gain_db = 0.0 if not math.isfinite(level) else min(max(target_lufs - level, -limit), limit)
        gains.append(10 ** (gain_db / 20))
    return gains


def master_loudness(mix: np.ndarray, sample_rate: int, target_lufs: float,
                    ceiling_dbtp: float = LIMITER_CEILING_DBTP) -> None:
    """Bring `mix` (float32 (n, channels), changed in place) to `target_lufs` integrated loudness (within
    LOUDNESS_TOLERANCE_LU) with its true peak at most `ceiling_dbtp`: a gain, then limit_true_peak; if that took
    the loudness too far under, a little more gain and limit again, up to LOUDNESS_ROUNDS times (a few tenths of
    a LU short at most after that: the loudest targets --loudness takes). A silent mix stays silent."""
    level = integrated_loudness(mix, sample_rate)
    for _ in range(LOUDNESS_ROUNDS):
        if not math.isfinite(level):
            break
        mix *= np.float32(10 ** ((target_lufs - level) / 20))
        if not limit_true_peak(mix, sample_rate, ceiling_dbtp):
            break  # a gain alone: exactly at the target
        level = integrated_loudness(mix, sample_rate)
        if abs(level - target_lufs) <= LOUDNESS_TOLERANCE_LU:
            break


def limit_true_peak(mix: np.ndarray, sample_rate: int, ceiling_dbtp: float,
                    ramp_s: float = LIMITER_RAMP_S) -> bool:
    """Lower `mix` (float32 (n, channels), in place) around every sample whose true peak passes `ceiling_dbtp`, just
    enough: a look-ahead limiter, which can look ahead as far as it likes since the whole mix is here.

    The gain each sample needs (ceiling / its true peak, at most 1) is taken as the minimum over ±ramp_s (so it is
    already down before a peak and holds through it), then averaged over ±ramp_s: a smooth gain, at each peak no
    more than that peak needs (every value averaged there is a minimum over a window holding the peak). A smooth
    gain changes the oversampled signal as it changes the samples, so the peaks land at the ceiling, not over.
    Returns whether anything was lowered."""
    from scipy.ndimage import minimum_filter1d, uniform_filter1d

    ceiling = np.float32(10 ** (ceiling_dbtp / 20))
    need = sample_true_peaks(mix)
    if not len(need) or need.max() <= ceiling:
        return False
    # In place, two arrays of one float32 a sample at most: a 30-minute mix is 80 million samples.
    np.maximum(need, np.float32(1e-12), out=need)
    np.divide(ceiling, need, out=need)
    np.minimum(need, np.float32(1.0), out=need)
    size = 2 * max(1, round(ramp_s * sample_rate)) + 1
    held = minimum_filter1d(need, size, mode="nearest")
    gain = uniform_filter1d(held, size, output=need, mode="nearest")
    del held
    np.minimum(gain, np.float32(1.0), out=gain)
    mix *= gain[:, None]
    return True
