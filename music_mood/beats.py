"""A track's beats and downbeats, found once from its audio when it is added (beside its tempo) and kept in its
record, for soundtracks cut on the beat (timing.py).

The tracker is BeatNet's network (Heydari et al. 2021; beatnet.py runs it: beat and downbeat probabilities 50 times
a second) where its weights are installed (`pip install --no-deps BeatNet==1.1.3`, as the README's install does),
decoded here: the tempo is the strongest repetition of those probabilities, librosa's dynamic programming (Ellis
2007) lays the beats on them held firmly to that tempo, and the downbeats are the phase of four beats that the
network hears most as ones. Without those weights, librosa's tracker over the audio's own onsets is the floor: it
starts from the tempo audio.estimate_tempo found, and its downbeats are the phase whose beats carry the most
low-frequency onset (the kick and the bass change on the one). benchmarks/bench_beats.py measures both against
madmom's tracker: on the 28 sample tracks the network's beats agree with madmom's 95 % of the time, the floor's 67 %
(it takes 2/3 or 4/3 of the tempo on a third of them). madmom itself does not build from PyPI on Python 3.11 and its
models are for non-commercial use; BeatNet's weights are CC BY 4.0.

Kept compactly in the record as "beats": {"first_s": the first beat, "steps_ms": the gaps between beats as
little-endian uint16 milliseconds in base64, "downbeat": the index of the first downbeat, "meter": beats to a
bar, "tracker": which found them ("beatnet" or "librosa": a build finds again the beats the floor found once the
network is installed)}, about 2 bytes a beat (a 4-minute song: under 1 KB); None for a track without a steady beat
(audio.estimate_tempo found no tempo).
"""
from __future__ import annotations

import base64
import os
from dataclasses import dataclass

import numpy as np

BEAT_RATE = 12_000  # the audio is averaged down to about this rate (onsets need no more)
BEAT_N_FFT = 512  # a 43 ms window: onsets are placed within a few ms of madmom's (1024 put them 10 ms early)
BEAT_HOP = 128  # ~10.7 ms onset frames: a beat is placed to within about half of that
BEAT_MELS = 64
LOW_MELS = 8  # the lowest mel bands (below ~250 Hz): the kick and the bass
TIGHTNESS = 400.0  # how firmly the tracker keeps to the tempo (librosa's default is 100)
METER = 4
REFINE_FRAMES = 2  # a beat moves onto the onset peak within this many frames (~21 ms) of where the tracker put it
# BeatNet's path: its 50 fps probabilities are interpolated UPSAMPLE times (a whole-frame period at 50 fps is up to
# 2 % off the tempo, and the tracker drifts off the beat), the tempo is looked for between MIN_BPM and MAX_BPM with
# a prior around PRIOR_BPM, and the tracker keeps to it more firmly than the floor (produced music keeps its tempo;
# 1600 against 400 measured 0.948 against 0.943 of beats on madmom's, benchmarks/bench_beats.py).
UPSAMPLE = 2
MIN_BPM, MAX_BPM, PRIOR_BPM = 40.0, 240.0, 120.0
NETWORK_TIGHTNESS = 1600.0
NETWORK_TRACKER, ONSET_TRACKER = "beatnet", "librosa"  # which found a grid (kept in its record)
TRACKER_ENV = "MUSIC_MOOD_BEAT_TRACKER"  # "librosa": the floor even where BeatNet's weights are installed


def track_beats(audio: np.ndarray, sample_rate: int, bpm: float | None, network: bool | None = None) -> dict | None:
    """The beat grid of mono float32 audio (see the module), or None when `bpm` is None (no steady beat): by BeatNet's
    network where network_chosen() (or `network` says so), else by librosa's onsets alone (the floor, started from
    `bpm`)."""
    from music_mood import beatnet

    if bpm is None:
        return None
    onsets = OnsetEnvelopes.of(audio, sample_rate)
    if network_chosen() if network is None else network:
        return _network_grid(beatnet.activations(audio, sample_rate), beatnet.FPS, onsets)
    return _onset_grid(onsets, bpm)


def _network_grid(activations: np.ndarray, fps: int, onsets: OnsetEnvelopes) -> dict | None:
    """The grid of BeatNet's (frames, 2) beat and downbeat probabilities: the tempo is the strongest repetition of
    their sum (autocorrelation, log-normal prior around 120 BPM), the beats librosa's dynamic programming over that
    sum held firmly to it, each placed between frames on its peak. The downbeats are the phase of four whose beats
    the network hears most as ones, with the audio's bass as the floor weighs it counting half as much (the network
    hears every click of a click track as a one; on the sample tracks the two together agree with madmom's
    downbeats 80 % of the time, the network's alone 77 %)."""
    import librosa
    import librosa.beat

    frames = np.arange(len(activations) * UPSAMPLE) / UPSAMPLE  # a whole-frame period at 50 fps is 2 % coarse
    beat, down = (np.interp(frames, np.arange(len(activations)), activations[:, k]) for k in (0, 1))
    envelope, rate = beat + down, fps * UPSAMPLE
    bpm = _strongest_tempo(envelope, rate)
    if bpm is None:
        return None
    _, found = librosa.beat.beat_track(onset_envelope=envelope, sr=rate, hop_length=1, bpm=bpm,
                                       tightness=NETWORK_TIGHTNESS, trim=False)
    found = np.asarray(found, dtype=np.int64)
    if len(found) < METER + 1:
        return None
    times = _refined(found, envelope) / rate
    share = down[found] / np.maximum(envelope[found], 1e-6)  # how much of each beat the network hears as a one
    strength = _normalised(share) + 0.5 * onsets.downbeat_strength(onsets.frames_at(times))
    return encode_beats(times, _strongest_phase(strength), tracker=NETWORK_TRACKER)


def _strongest_tempo(envelope: np.ndarray, rate: float) -> float | None:
    """The tempo (BPM, between lags of whole frames by a parabola) whose period the envelope repeats most strongly,
    weighted by a log-normal prior around PRIOR_BPM (an octave wide): None when nothing repeats."""
    import librosa

    lags = np.arange(1, int(rate * 60 / MIN_BPM) + 1)
    repeats = librosa.autocorrelate(envelope - envelope.mean(), max_size=len(lags) + 1)
    bpm = 60 * rate / lags
    weighted = repeats[1:] * np.exp(-0.5 * np.log2(bpm / PRIOR_BPM) ** 2) * (bpm <= MAX_BPM)
    lag = int(np.argmax(weighted)) + 1
    if weighted[lag - 1] <= 0 or not 1 <= lag < len(lags):
        return None
    return 60 * rate / (lag + peak_offset(*repeats[lag - 1:lag + 2]))


@dataclass(frozen=True)
class OnsetEnvelopes:
    """The audio's onset strength over all bands and the rise in power of its lowest (the kick and the bass), both
    at `rate` frames a second."""

    onsets: np.ndarray
    low: np.ndarray
    rate: float

    @classmethod
    def of(cls, audio: np.ndarray, sample_rate: int) -> OnsetEnvelopes:
        import librosa
        import librosa.feature
        import librosa.onset

        y, rate = averaged_down(audio, sample_rate, BEAT_RATE)
        power = librosa.feature.melspectrogram(y=y, sr=rate, n_fft=BEAT_N_FFT, hop_length=BEAT_HOP,
                                               n_mels=BEAT_MELS)
        # The spectrogram's frames are centred already: the onset strength is not shifted again (onset_strength's
        # `center` would move it by n_fft // (2 * hop) frames more, and every beat ~80 ms late).
        onsets = librosa.onset.onset_strength(S=librosa.power_to_db(power), sr=rate, hop_length=BEAT_HOP,
                                              center=False)
        # The low band's rise in power, not in dB: a dB scale makes a click's faint leakage into silent low bands
        # jump as far as a kick does.
        bass = power[:LOW_MELS].sum(axis=0)
        return cls(onsets, np.maximum(0.0, np.diff(bass, prepend=bass[:1])), rate / BEAT_HOP)

    def frames_at(self, times: np.ndarray) -> np.ndarray:
        return np.minimum(np.round(np.asarray(times) * self.rate).astype(np.int64), len(self.onsets) - 1)

    def downbeat_strength(self, frames: np.ndarray) -> np.ndarray:
        """How strongly each of these frames sounds like a bar's one: the low band's onset, the whole band's
        counting half as much (each normalised by its mean over the frames)."""
        low, onsets = self.low[frames], self.onsets[np.minimum(frames, len(self.onsets) - 1)]
        return _normalised(low) + 0.5 * _normalised(onsets)


def _onset_grid(onsets: OnsetEnvelopes, bpm: float) -> dict | None:
    """The floor: librosa's tracker over the audio's own onset strength, from `bpm`; the downbeats are the phase
    whose beats carry the most bass."""
    import librosa
    import librosa.beat

    _, frames = librosa.beat.beat_track(onset_envelope=onsets.onsets, sr=onsets.rate * BEAT_HOP,
                                        hop_length=BEAT_HOP, bpm=bpm, tightness=TIGHTNESS, trim=False)
    frames = np.asarray(frames, dtype=np.int64)
    if len(frames) < METER + 1:
        return None
    times = _refined(frames, onsets.onsets) / onsets.rate
    return encode_beats(times, _strongest_phase(onsets.downbeat_strength(frames)), tracker=ONSET_TRACKER)


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
        out[i] = peak + peak_offset(*onsets[peak - 1:peak + 2])
    return out


def peak_offset(before: float, peak: float, after: float) -> float:
    """Where the parabola through three equally spaced values peaks, relative to the middle one (-0.5 to 0.5; 0
    where they do not bend down): a peak placed between frames or lags."""
    curvature = before - 2 * peak + after
    return float(np.clip(0.5 * (before - after) / curvature, -0.5, 0.5)) if curvature < 0 else 0.0


def averaged_down(audio: np.ndarray, sample_rate: int, rate: int) -> tuple[np.ndarray, float]:
    """(mono float32 audio brought down to about `rate` Hz, its exact rate): the mean of each sample_rate // rate
    samples, a crude low-pass that onsets need no more than, as one matrix-vector product (audio.estimate_tempo
    and track_beats read their onsets from it)."""
    factor = max(1, sample_rate // rate)
    usable = len(audio) // factor * factor
    y = np.asarray(audio[:usable], dtype=np.float32).reshape(-1, factor) @ np.full(factor, 1 / factor, np.float32)
    return y, sample_rate / factor


def _normalised(values: np.ndarray) -> np.ndarray:
    return values / (values.mean() or 1.0)


def _strongest_phase(strength: np.ndarray) -> int:
    """Which of the first METER beats is a downbeat: the phase whose beats are strongest on average."""
    return int(np.argmax([strength[phase::METER].mean() for phase in range(METER)]))


def encode_beats(times: np.ndarray, downbeat: int, meter: int = METER, tracker: str = ONSET_TRACKER) -> dict:
    steps = np.clip(np.round(np.diff(times) * 1000), 1, 65535).astype("<u2")
    return {"first_s": round(float(times[0]), 3), "steps_ms": base64.b64encode(steps.tobytes()).decode("ascii"),
            "downbeat": int(downbeat), "meter": int(meter), "tracker": tracker}


def grid_tempo(beats: dict | None) -> float | None:
    """The tempo of a beat grid (BPM, to one decimal: the median gap between its beats), None for None."""
    times = beat_times(beats)
    return round(60 / float(np.median(np.diff(times))), 1) if len(times) > 1 else None


def floor_chosen() -> bool:
    """Whether $MUSIC_MOOD_BEAT_TRACKER chooses the floor ("librosa"): builds about a sixth faster, beats less
    accurate (benchmarks/RESULTS.md)."""
    return os.environ.get(TRACKER_ENV, "").strip().lower() == ONSET_TRACKER


def network_chosen() -> bool:
    """Whether beats are found by BeatNet's network: its weights are installed and the floor is not chosen."""
    from music_mood import beatnet

    return not floor_chosen() and beatnet.available()


def needs_tracking(record: dict) -> bool:
    """Whether a listed track's beats are to be found (again): it has none yet, or a grid the floor found where
    the network is now installed and chosen. A track without a steady beat (None) stays so."""
    if "beats" not in record or "bpm" not in record:
        return True
    beats = record["beats"]
    return isinstance(beats, dict) and beats.get("tracker") != NETWORK_TRACKER and network_chosen()


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
