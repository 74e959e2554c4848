"""One loudness (issue 24 §2): pieces of tracks 20 dB apart come out at one BS.1770 loudness, the soundtrack at its
target (-14 LUFS, or --loudness), true peak at most -1 dBTP in the .wav, the decoded .m4a and the .mp4's audio.

Measured as a listener's tools would: pyloudnorm's meter on the rendered files, segment by segment, and the true peak
of the decoded audio oversampled 4× by soxr (not the resampler the limiter uses)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from music_mood import loudness
from music_mood.audio import decode_stretches
from music_mood.render import write_outputs
from music_mood.soundtrack import Plan
from tests.plan_factory import hand_made_plan

SR = 44100
SMALL = (320, 180)
SCENE_S = 6.0  # each scene: two photos of 3 s, one piece
# Two sample tracks, electronic and acoustic, whose played stretches (from 5 s and 15 s) are steady: a stretch's
# middle measures within 0.3 LU of the whole stretch, which is what a piece's gain is set by.
LOUD, QUIET = "nostalgic/nostalgic_electronic_2.opus", "tender/tender_acoustic_s411.opus"
STARTS = (5, 15)


def lufs(samples: np.ndarray) -> float:
    import pyloudnorm

    return float(pyloudnorm.Meter(SR).integrated_loudness(np.asarray(samples, np.float64)))


def true_peak(samples: np.ndarray) -> float:
    """dBTP of float (n, 2) samples: oversampled 4× by soxr (VHQ), independently of loudness.py's resample_poly."""
    import soxr

    up = soxr.resample(np.ascontiguousarray(samples, np.float32), SR, 4 * SR, quality="VHQ")
    return 20 * math.log10(max(float(np.abs(up).max()), float(np.abs(samples).max())))


def decoded(path: Path) -> np.ndarray:
    """The audio stream of `path` (.m4a, .mp4: AAC, planar float; .wav: 16-bit) decoded: float32 (n, 2)."""
    import av
    import soundfile

    if path.suffix == ".wav":
        return soundfile.read(path, dtype="float32")[0]

    with av.open(str(path)) as container:
        frames = [frame.to_ndarray() for frame in container.decode(audio=0)]
    return np.concatenate(frames, axis=1).T


def segments(samples: np.ndarray, scenes: int) -> list[float]:
    """The loudness of each scene's piece in the rendered soundtrack, away from its cross-fades and the fades."""
    return [lufs(samples[round((k * SCENE_S + 1.0) * SR):round(((k + 1) * SCENE_S - 1.0) * SR)])
            for k in range(scenes)]


@pytest.fixture
def library(isolated_library, sample_tracks) -> Path:
    """processed_music/loud.wav: a sample track as it is; quiet.wav: another, each stretch the plan plays of it
    (STARTS, and the cross-fades' reach around them) scaled to 20 LU under the loud stretches' mean."""
    import soundfile

    by_name = {f"{t.parent.name}/{t.name}": t for t in sample_tracks}
    folder = isolated_library / "processed_music"
    folder.mkdir(parents=True, exist_ok=True)
    loud = decode_stretches(by_name[LOUD], [(0.0, 40.0)], SR)[0]
    quiet = decode_stretches(by_name[QUIET], [(0.0, 40.0)], SR)[0]
    level = np.mean([lufs(loud[start * SR:(start + 6) * SR]) for start in STARTS]) - 20.0
    for start in STARTS:
        quiet[(start - 1) * SR:(start + 7) * SR] *= 10 ** ((level - lufs(quiet[start * SR:(start + 6) * SR])) / 20)
    soundfile.write(folder / "loud.wav", loud, SR, subtype="FLOAT")
    soundfile.write(folder / "quiet.wav", quiet, SR, subtype="FLOAT")
    return isolated_library


def alternating_plan(library: Path, photos: dict[str, Path], **fields) -> Plan:
    """Four scenes of SCENE_S: loud, quiet, loud, quiet (from STARTS[0], then from STARTS[1])."""
    album = [photos[name] for name in ("coffee.png", "chelsea.png", "rocket.jpg", "astronaut.png")] * 2
    return hand_made_plan(library, ["processed_music/loud.wav", "processed_music/quiet.wav"] * 2, album,
                          SCENE_S / 2, 2, track_start_s=[float(STARTS[0])] * 2 + [float(STARTS[1])] * 2, **fields)


@pytest.mark.parametrize("target", [None, -23.0, loudness.MAX_LOUDNESS_LUFS])
def test_pieces_20_db_apart_come_out_at_one_loudness_and_the_target(library, photos, tmp_path, target):
    plan = alternating_plan(library, photos, **({} if target is None else {"loudness_lufs": target}))
    target = -14.0 if target is None else target
    assert plan.loudness_lufs == target
    sources = [decode_stretches(library / p.file_path, [(p.track_start_s, p.track_end_s)], SR)[0]
               for scene in plan.scenes for p in scene.pieces]
    levels = [lufs(s) for s in sources]
    assert min(levels[0], levels[2]) - max(levels[1], levels[3]) > 18.0  # 20 LU apart in their files

    outs = [tmp_path / "trip.wav", tmp_path / "trip.m4a", tmp_path / "trip.mp4", tmp_path / "trip.json"]
    write_outputs(plan, outs, progress=False, size=SMALL)
    wav, m4a, mp4 = (decoded(out) for out in outs[:3])
    for name, samples in (("wav", wav), ("m4a", m4a), ("mp4", mp4)):
        pieces = segments(samples, len(plan.scenes))
        assert max(pieces) - min(pieces) <= 1.0, (name, pieces)
        assert all(abs(level - target) <= 1.0 for level in pieces), (name, pieces)
        assert abs(lufs(samples) - target) <= 1.0, name
        assert true_peak(samples) <= loudness.TRUE_PEAK_DBTP, (name, true_peak(samples))
    assert json.loads(outs[3].read_text(encoding="utf-8"))["loudness_lufs"] == target  # the plan says what it met


def test_a_plan_stored_before_loudness_renders_at_the_default(library, photos):
    data = alternating_plan(library, photos, loudness_lufs=-20.0).to_dict()
    assert data["loudness_lufs"] == -20.0 and Plan.from_dict(data).loudness_lufs == -20.0
    del data["loudness_lufs"]
    assert Plan.from_dict(data).loudness_lufs == loudness.DEFAULT_LOUDNESS_LUFS == -14.0


def test_true_peak_sees_between_the_samples():
    # A sine at a quarter of the sample rate, sampled 45° off its crests: every sample is at -3 dB of its peak.
    t = np.arange(SR) / SR
    sine = np.sin(2 * np.pi * (SR / 4) * t + np.pi / 4).astype(np.float32)
    assert abs(20 * math.log10(np.abs(sine).max()) + 3.01) < 0.01
    assert abs(loudness.true_peak_dbtp(sine)) < 0.2
    meter = loudness.TruePeakMeter()  # a block at a time, as the decoded AAC is measured: the same figure
    for at in range(0, SR, 1000):
        meter.add(sine[at:at + 1000])
    assert meter.dbtp() == pytest.approx(loudness.true_peak_dbtp(sine), abs=1e-6)


def test_the_limiter_lowers_only_around_the_peaks_and_smoothly():
    rng = np.random.default_rng(0)
    music = (rng.standard_normal((10 * SR, 2)) * 0.05).astype(np.float32)
    for at in (2.0, 5.0, 5.004, 8.0):  # drum hits twice full scale, one a double
        music[round(at * SR):round(at * SR) + 40] += 2.0
    limited = music.copy()
    assert loudness.limit_true_peak(limited, SR, -1.8)
    assert true_peak(limited) <= -1.8 + 0.1  # soxr's filter is not resample_poly's: within a tenth of a dB
    gain = (limited / np.where(music == 0, 1, music))[:, 0]
    ramp = round(loudness.LIMITER_RAMP_S * SR)
    near = np.zeros(len(music), bool)
    for at in (2.0, 5.0, 8.0):
        near[round(at * SR) - 3 * ramp:round(at * SR) + 3 * ramp] = True
    assert np.array_equal(limited[~near], music[~near])  # the music between the hits is untouched
    assert np.abs(np.diff(gain)).max() <= 1.0 / ramp + 1e-4  # it ramps over LIMITER_RAMP_S: no click
    assert abs(lufs(limited) - lufs(music)) < 1.0


def test_loudness_measured_a_chunk_at_a_time_is_pyloudnorms_over_the_whole(sample_tracks):
    # Three tracks at levels 20 and 40 dB apart, with a silence: the gates decide which blocks count.
    parts = [decode_stretches(track, [(0.0, 12.0)], SR)[0] * gain for track, gain in zip(sample_tracks, (1, 0.1, 0.01))]
    music = np.concatenate([parts[0], np.zeros((3 * SR, 2), np.float32), parts[1], parts[2]])
    for chunk_s in (60.0, 7.3, 0.5):
        assert loudness.integrated_loudness(music, SR, chunk_s) == pytest.approx(lufs(music), abs=1e-6)


def test_a_silent_soundtrack_stays_silent():
    silence = np.zeros((3 * SR, 2), np.float32)
    loudness.master_loudness(silence, SR, -14.0)
    assert not silence.any()
    assert loudness.integrated_loudness(silence, SR) == -math.inf


def test_a_piece_shorter_than_the_meters_block_is_still_measured():
    tone = (0.1 * np.sin(2 * np.pi * 1000 * np.arange(SR // 10) / SR)).astype(np.float32)
    long = np.resize(tone, SR * 2)
    assert loudness.integrated_loudness(tone, SR) == pytest.approx(loudness.integrated_loudness(long, SR), abs=0.1)


@pytest.mark.parametrize("value, message", [
    ("-5", "the loudness must be between -40 and -10 LUFS, not -5"),
    ("-60", "the loudness must be between -40 and -10 LUFS, not -60"),
    ("nan", "the loudness must be between -40 and -10 LUFS, not nan"),
    ("loud", "'loud' is not a number"),
])
def test_cli_refuses_a_loudness_out_of_range_in_one_line(photos, call_cli, value, message):
    import recommend

    done = call_cli(recommend.main, photos["coffee.png"], photos["chelsea.png"], "--soundtrack", "--loudness", value)
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == f"recommend.py: error: argument --loudness: {message}"


def test_cli_loudness_goes_with_soundtrack(photos, call_cli):
    import recommend

    done = call_cli(recommend.main, photos["coffee.png"], "--loudness", "-20")
    assert done.returncode == 2 and "--loudness" in done.stderr.splitlines()[-1]


def test_cli_renders_at_the_loudness_asked(library_copy, checkpoints, photos, tmp_path, call_cli):
    import recommend

    album = [photos[name] for name in ("coffee.png", "chelsea.png", "rocket.jpg")]
    outs = [tmp_path / "trip.wav", tmp_path / "trip.json"]
    done = call_cli(recommend.main, *album, "--soundtrack", "--seconds-per-photo", "4", "--loudness", "-20",
                    *[arg for out in outs for arg in ("--out", out)],
                    "--blip-model", checkpoints["blip"], "--clap-model", checkpoints["clap"])
    assert done.returncode == 0, done.stderr
    samples = decoded(outs[0])
    assert abs(lufs(samples) + 20.0) <= 1.0 and true_peak(samples) <= loudness.TRUE_PEAK_DBTP
    assert json.loads(outs[1].read_text(encoding="utf-8"))["loudness_lufs"] == -20.0
