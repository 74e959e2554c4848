"""Tempo (BPM): the estimator on click tracks of known tempo, the stored bpm, old libraries gaining it without
re-embedding, and the --bpm filter against a brute-force reference."""
from __future__ import annotations

import numpy as np
import pytest

from music_mood.audio import estimate_tempo

RATE = 48_000


def click_track(bpm: float, seconds: float = 30.0, rate: int = RATE) -> np.ndarray:
    """A 1 kHz click (10 ms, decaying) on every beat of `bpm`, as float32 mono at `rate`."""
    audio = np.zeros(int(seconds * rate), np.float32)
    n = int(0.01 * rate)
    click = np.sin(2 * np.pi * 1000 * np.arange(n) / rate) * np.exp(-np.arange(n) / (0.002 * rate))
    for beat in np.arange(0, seconds - 0.02, 60 / bpm):
        start = round(beat * rate)
        audio[start:start + n] += click.astype(np.float32)
    return audio


@pytest.mark.parametrize("bpm", [90, 128, 72.5, 101.3, 133.7, 150])
def test_a_click_track_is_timed_within_2_bpm(bpm):
    assert estimate_tempo(click_track(bpm), RATE) == pytest.approx(bpm, abs=2)


@pytest.mark.parametrize("rate", [16_000, 44_100])
def test_other_sample_rates_give_the_same_tempo(rate):
    assert estimate_tempo(click_track(128, rate=rate), rate) == pytest.approx(128, abs=2)


def test_a_long_track_is_timed_on_its_middle():
    """Three minutes of 100 BPM between a minute of 140 BPM at each end: the middle two minutes decide."""
    audio = np.concatenate([click_track(140, 60), click_track(100, 180), click_track(140, 60)])
    assert estimate_tempo(audio, RATE) == pytest.approx(100, abs=2)


def test_the_tempo_has_one_decimal():
    bpm = estimate_tempo(click_track(101.3), RATE)
    assert bpm == round(bpm, 1) and isinstance(bpm, float)


@pytest.mark.parametrize("name", ["silence", "noise", "tone", "too short"])
def test_audio_without_a_beat_has_no_tempo(name):
    rng = np.random.default_rng(0)
    audio = {"silence": np.zeros(RATE * 10, np.float32),
             "noise": (0.1 * rng.normal(size=RATE * 30)).astype(np.float32),
             "tone": np.sin(2 * np.pi * 440 * np.arange(RATE * 30) / RATE).astype(np.float32),
             "too short": click_track(120, seconds=2)}[name]
    assert estimate_tempo(audio, RATE) is None
