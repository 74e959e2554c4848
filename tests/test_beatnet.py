"""BeatNet's activations (music_mood.beatnet) on real audio: the shape and range of a sample track's, and on a click
track of known tempo, a beat on every click; its weights read without torch as torch reads them, a weights file that
would run code refused, and no torch imported to find a track's beats. The features and network are checked against
BeatNet's own (with madmom) outside the suite: madmom does not install on Python 3.11."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from music_mood import beatnet
from music_mood.audio import decode_audio
from music_mood.beats import TRACKER_ENV

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


def test_the_weights_are_read_without_torch_as_torch_reads_them():
    import torch
    for name in beatnet.WEIGHTS:
        path = beatnet._weights_folder() / name
        ours, theirs = beatnet.read_state_dict(path), torch.load(path, map_location="cpu", weights_only=True)
        assert list(ours) == list(theirs)
        for key, tensor in theirs.items():
            np.testing.assert_array_equal(ours[key], tensor.numpy())


def test_a_weights_file_that_would_run_code_is_refused(tmp_path):
    """A pickle that names anything but a state dict's three names (here os.system) is refused, never called."""
    import pickle
    import zipfile

    class Payload:
        def __reduce__(self):
            return (__import__("os").system, ("touch " + str(tmp_path / "ran"),))

    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"conv1.weight": Payload()}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="is not part of a state dict"):
        beatnet.read_state_dict(path)
    assert not (tmp_path / "ran").exists()


def test_a_build_on_onnx_runtime_never_imports_torch(tmp_path, sample_tracks):
    """BeatNet runs on ONNX Runtime from weights read without torch: finding a track's beats imports no torch."""
    import subprocess
    import sys

    script = ("import sys, pathlib; from music_mood.audio import decode_audio, read_rhythm; "
              "r = read_rhythm(decode_audio(pathlib.Path(sys.argv[1]), 48000), 48000); "
              "assert r['beats']['tracker'] == 'beatnet', r; print('torch' in sys.modules)")
    env = {key: value for key, value in os.environ.items() if key != TRACKER_ENV}  # the default tracker
    done = subprocess.run([sys.executable, "-c", script, str(sample_tracks[0])], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1], timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
