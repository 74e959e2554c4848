"""A track's beats and downbeats, found once from its audio when it is added (beside its tempo) and kept in its
record, for soundtracks cut on the beat (timing.py).

The tracker is librosa's (dynamic programming over an onset envelope, Ellis 2007), started from the tempo that
audio.estimate_tempo found and held to it firmly: produced music keeps its tempo. Downbeats: the bar is taken as
four beats, and its phase is the one whose beats carry the most low-frequency onset (the kick and the bass change
on the one) with the whole band's onset as a second opinion. madmom's trackers are stronger, but its release on
PyPI does not build on Python 3.11, and the others that ship weights need madmom or download them
(benchmarks/bench_beats.py measures this tracker against madmom's).

Kept compactly in the record as "beats": {"first_s": the first beat, "steps_ms": the gaps between beats as
little-endian uint16 milliseconds in base64, "downbeat": the index of the first downbeat, "meter": beats to a
bar}, about 2 bytes a beat (a 4-minute song: under 1 KB); None for a track without a steady beat (no tempo).
"""
from __future__ import annotations

import base64

import numpy as np

BEAT_RATE = 12_000  # the audio is averaged down to about this rate (onsets need no more)
BEAT_N_FFT = 512  # a 43 ms window: onsets are placed within a few ms of madmom's (1024 put them 10 ms early)
BEAT_HOP = 128  # ~10.7 ms onset frames: a beat is placed to within about half of that
BEAT_MELS = 64
LOW_MELS = 8  # the lowest mel bands (below ~250 Hz): the kick and the bass
TIGHTNESS = 400.0  # how firmly the tracker keeps to the tempo (librosa's default is 100)
METER = 4
REFINE_FRAMES = 2  # a beat moves onto the onset peak within this many frames (~21 ms) of where the tracker put it


def track_beats(audio: np.ndarray, sample_rate: int, bpm: float | None) -> dict | None:
    """The beat grid of mono float32 audio (see the module), or None when `bpm` is None (no steady beat)."""
    import librosa
    import librosa.beat
    import librosa.feature
    import librosa.onset

    if bpm is None:
        return None
    y, rate = averaged_down(audio, sample_rate, BEAT_RATE)
    power = librosa.feature.melspectrogram(y=y, sr=rate, n_fft=BEAT_N_FFT, hop_length=BEAT_HOP, n_mels=BEAT_MELS)
    mel = librosa.power_to_db(power)
    # The spectrogram's frames are centred already: the onset strength is not shifted again (onset_strength's
    # `center` would move it by n_fft // (2 * hop) frames more, and every beat ~80 ms late).
    onsets = librosa.onset.onset_strength(S=mel, sr=rate, hop_length=BEAT_HOP, center=False)
    # The low band's rise in power, not in dB: a dB scale makes a click's faint leakage into silent low bands jump
    # as far as a kick does.
    bass = power[:LOW_MELS].sum(axis=0)
    low = np.maximum(0.0, np.diff(bass, prepend=bass[:1]))
    _, frames = librosa.beat.beat_track(onset_envelope=onsets, sr=rate, hop_length=BEAT_HOP, bpm=bpm,
                                        tightness=TIGHTNESS, trim=False)
    frames = np.asarray(frames, dtype=np.int64)
    if len(frames) < METER + 1:
        return None
    times = _refined(frames, onsets) * BEAT_HOP / rate
    return encode_beats(times, _downbeat_phase(frames, onsets, low))


def _refined(frames: np.ndarray, onsets: np.ndarray) -> np.ndarray:
    """Each beat moved onto the onset peak within REFINE_FRAMES of it, placed between frames by a parabola through
    the peak and its neighbours: the tracker's beats are whole frames at a whole-frame period, which drift by up to
    half a frame a beat from music whose period falls between frames (until the next jump)."""
    out = frames.astype(np.float64)
    for i, frame in enumerate(frames):
        lo, hi = max(1, frame - REFINE_FRAMES), min(len(onsets) - 1, frame + REFINE_FRAMES + 1)
        if hi - lo < 1:
            continue
        peak = lo + int(np.argmax(onsets[lo:hi]))
        if peak <= 0 or peak >= len(onsets) - 1 or onsets[peak] <= 0:
            continue
        before, at, after = onsets[peak - 1], onsets[peak], onsets[peak + 1]
        curvature = before - 2 * at + after
        out[i] = peak + (float(np.clip(0.5 * (before - after) / curvature, -0.5, 0.5)) if curvature < 0 else 0.0)
    return out


def averaged_down(audio: np.ndarray, sample_rate: int, rate: int) -> tuple[np.ndarray, float]:
    """(mono float32 audio brought down to about `rate` Hz, its exact rate): the mean of each sample_rate // rate
    samples, a crude low-pass that onsets need no more than, as one matrix-vector product (audio.estimate_tempo
    and track_beats read their onsets from it)."""
    factor = max(1, sample_rate // rate)
    usable = len(audio) // factor * factor
    y = np.asarray(audio[:usable], dtype=np.float32).reshape(-1, factor) @ np.full(factor, 1 / factor, np.float32)
    return y, sample_rate / factor


def _downbeat_phase(frames: np.ndarray, onsets: np.ndarray, low: np.ndarray) -> int:
    """Which of the first METER beats is a downbeat: the phase whose beats have the strongest low-band onsets,
    the whole band's counting half as much (each normalised by its mean over all beats)."""
    def normalised(envelope):
        at_beats = envelope[np.minimum(frames, len(envelope) - 1)]
        return at_beats / (at_beats.mean() or 1.0)

    strength = normalised(low) + 0.5 * normalised(onsets)
    return int(np.argmax([strength[phase::METER].mean() for phase in range(METER)]))


def encode_beats(times: np.ndarray, downbeat: int, meter: int = METER) -> dict:
    steps = np.clip(np.round(np.diff(times) * 1000), 1, 65535).astype("<u2")
    return {"first_s": round(float(times[0]), 3), "steps_ms": base64.b64encode(steps.tobytes()).decode("ascii"),
            "downbeat": int(downbeat), "meter": int(meter)}


def beat_times(beats: dict | None) -> np.ndarray:
    """The beats of a record's "beats" (seconds into the track), float64; empty for None."""
    if not beats:
        return np.zeros(0)
    steps = np.frombuffer(base64.b64decode(beats["steps_ms"]), dtype="<u2").astype(np.float64) / 1000
    return beats["first_s"] + np.concatenate([[0.0], np.cumsum(steps)])


def downbeat_times(beats: dict | None) -> np.ndarray:
    """The downbeats of a record's "beats" (seconds into the track)."""
    if not beats:
        return np.zeros(0)
    return beat_times(beats)[int(beats["downbeat"])::int(beats["meter"])]
