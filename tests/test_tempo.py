"""Tempo (BPM): the estimator on click tracks of known tempo, the stored bpm, old libraries gaining it without
re-embedding, and the --bpm filter against a brute-force reference."""
from __future__ import annotations

import json

import numpy as np
import pytest

import music_to_vector
from music_mood.audio import decode_audio, estimate_tempo
from music_mood.library import LibraryPaths, load_database, save_database

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


# ---------------------------------------------------------------------------------------------- stored with each track


def test_the_built_library_stores_each_tracks_tempo(built_library):
    """Every real sample track has its bpm, one decimal, the estimator's figure for its decoded audio."""
    db = load_database(LibraryPaths.at(built_library))
    assert len(db) == 6
    for track in db.tracks:
        bpm = track["bpm"]
        assert isinstance(bpm, float) and 40 <= bpm <= 240 and bpm == round(bpm, 1)
        assert bpm == estimate_tempo(decode_audio(built_library / track["file_path"], RATE), RATE)


def _forget_tempos(paths: LibraryPaths) -> dict[str, float]:
    """Make the library one built before tempos were stored; returns what each track's bpm was."""
    meta = json.loads(paths.metadata.read_text())
    was = {t["file_path"]: t.pop("bpm") for t in meta["tracks"]}
    paths.metadata.write_text(json.dumps(meta))
    return was


def test_an_old_library_gains_its_tempos_in_one_commit_without_embedding(library_copy, checkpoints, call_cli,
                                                                         monkeypatch):
    from music_mood import build

    paths = LibraryPaths.at(library_copy)
    was = _forget_tempos(paths)
    before = load_database(paths)

    def no_embedding(*args, **kwargs):
        raise AssertionError("a track was embedded again to read its tempo")

    commits = []

    def counted(*args, **kwargs):
        commits.append(args)
        return save_database(*args, **kwargs)

    monkeypatch.setattr(build, "embed_track", no_embedding)
    monkeypatch.setattr(build, "save_database", counted)
    done = call_cli(music_to_vector.main, "--clap-model", checkpoints["clap"])
    assert done.returncode == 0, done.stderr
    after = load_database(paths)
    assert {t["file_path"]: t["bpm"] for t in after.tracks} == was
    np.testing.assert_array_equal(after.vectors, before.vectors)
    np.testing.assert_array_equal(after.segments, before.segments)
    assert len(commits) == 1
    assert sorted(done.stdout.splitlines()) == sorted(f"tempo  {path}  ({bpm:.1f} BPM)" for path, bpm in was.items())
    assert f"the tempo of {len(was)} read" in done.stderr

    # Nothing is left to read: the next run decodes nothing.
    def no_decoding(*args, **kwargs):
        raise AssertionError("audio was decoded again")

    monkeypatch.setattr(build, "decode_audio", no_decoding)
    monkeypatch.setattr(build, "read_track", no_decoding)
    again = call_cli(music_to_vector.main, "--clap-model", checkpoints["clap"])
    assert again.returncode == 0 and again.stdout == "" and "tempo" not in again.stderr


def test_a_file_that_no_longer_decodes_keeps_the_track_without_a_tempo(library_copy, clap_audio):
    from music_mood.build import build_library

    paths = LibraryPaths.at(library_copy)
    was = _forget_tempos(paths)
    broken = sorted(was)[0]
    (library_copy / broken).write_bytes(b"not audio any more")
    report = build_library(clap_audio, paths, progress=False, fill_tempo=True)
    assert not report.failed and not report.added
    (line,) = report.problem_lines()
    assert line.startswith(f"Warning: cannot read the tempo of {broken}: cannot decode ")
    tracks = {t["file_path"]: t for t in load_database(paths).tracks}
    assert "bpm" not in tracks[broken]
    assert {path: t["bpm"] for path, t in tracks.items() if path != broken} == {p: b for p, b in was.items()
                                                                                if p != broken}


def test_rebuild_reads_every_tempo_again(library_copy, clap_audio):
    from music_mood.build import build_library

    paths = LibraryPaths.at(library_copy)
    was = _forget_tempos(paths)
    report = build_library(clap_audio, paths, progress=False, rebuild=True)
    assert len(report.added) == len(was) and not report.tempo_read
    assert {t["file_path"]: t["bpm"] for t in load_database(paths).tracks} == was


def test_without_fill_tempo_a_build_leaves_old_tracks_as_they_are(library_copy, clap_audio, monkeypatch):
    """The web app's uploads add their files only; an old library's tempos are read by music_to_vector.py."""
    from music_mood import build

    paths = LibraryPaths.at(library_copy)
    _forget_tempos(paths)
    monkeypatch.setattr(build, "decode_audio", lambda *a, **k: pytest.fail("audio was decoded"))
    report = build.build_library(clap_audio, paths, progress=False)
    assert not report.tempo_read and all("bpm" not in t for t in load_database(paths).tracks)
