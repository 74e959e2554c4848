"""BeatNet's activations (music_mood.beatnet) on real audio: the shape and range of a sample track's, and on a click
track of known tempo, a beat on every click. The features and network are checked against BeatNet's own (with madmom)
outside the suite: madmom does not install on Python 3.11."""
from __future__ import annotations

import numpy as np
import pytest

from music_mood import beatnet
from music_mood.audio import decode_audio

RATE = 44_100
TOLERANCE_S = 0.040  # a beat is found when the activation peaks within this of the click (two frames)


def click_track(bpm: float, seconds: float = 20.0, rate: int = RATE) -> tuple[np.ndarray, np.ndarray]:
    """(float32 mono audio with a click on every beat of `bpm`, the clicks' times in seconds): each click a 30 ms burst
    of 1 kHz and noise, decaying in 5 ms, the first at 0.5 s."""
    n = int(0.03 * rate)
    t = np.arange(n) / rate
    burst = np.sin(2 * np.pi * 1000 * t) + 0.5 * np.random.default_rng(0).standard_normal(n)
    click = (0.5 * burst * np.exp(-t / 0.005)).astype(np.float32)
    audio = np.zeros(int(seconds * rate), np.float32)
    times = np.arange(0.5, seconds - 0.1, 60 / bpm)
    for time in times:
        start = round(time * rate)
        audio[start:start + n] += click
    return audio, times


def activation_peaks(any_beat: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """The times (s) of the local maxima of a beat activation above `threshold`."""
    middle = any_beat[1:-1]
    peaks = (middle >= any_beat[:-2]) & (middle > any_beat[2:]) & (middle > threshold)
    return (np.flatnonzero(peaks) + 1) / beatnet.FPS


def test_the_weights_are_installed():
    assert beatnet.available()


def test_a_real_track_gives_a_probability_pair_every_20_ms(sample_tracks):
    track = sample_tracks[0]
    audio = decode_audio(track, 22_050)
    result = beatnet.activations(audio, 22_050)
    assert result.dtype == np.float32 and result.ndim == 2 and result.shape[1] == 2
    assert abs(len(result) - len(audio) / 22_050 * beatnet.FPS) <= 1
    assert result.min() >= 0 and result.sum(axis=1).max() <= 1 + 1e-5  # two of three exclusive classes
    assert result.sum(axis=1).max() > 0.5  # music has beats the network is sure of


def test_every_click_of_a_120_bpm_click_track_is_a_beat():
    audio, clicks = click_track(120)
    result = beatnet.activations(audio, RATE)
    peaks = activation_peaks(result.sum(axis=1))
    distance = np.abs(peaks[None, :] - clicks[:, None]).min(axis=1)
    assert np.mean(distance <= TOLERANCE_S) >= 0.9
    assert len(peaks) <= len(clicks) * 1.1  # and no beats between the clicks


def test_a_click_track_at_another_rate_gives_the_same_beats():
    at_44k = beatnet.activations(click_track(120, seconds=8.0)[0], RATE)
    at_22k = beatnet.activations(click_track(120, seconds=8.0, rate=22_050)[0], 22_050)
    assert at_44k.shape == at_22k.shape
    # A click falls between two frames whose activations are nearly equal: the peak may take either.
    np.testing.assert_allclose(activation_peaks(at_44k.sum(axis=1)), activation_peaks(at_22k.sum(axis=1)),
                               atol=1 / beatnet.FPS + 1e-9)


@pytest.mark.parametrize("seconds", [0.0, 0.005])
def test_silence_too_short_for_a_frame_gives_frames_as_madmom_counts_them(seconds):
    result = beatnet.activations(np.zeros(int(seconds * RATE), np.float32), RATE)
    assert result.shape == (int(np.ceil(seconds * beatnet.FPS)), 2)
