"""Soundtracks cut on the beat (issue 24 §1), on click tracks whose beats and downbeats are known: the beats stored
when a track is added, photo changes on the beat of the music playing, scene changes on downbeats, photo lengths of
whole beats, the end within a beat of the length asked, whole-beat cross-fades, the beat grid in the plan, a track
without a beat kept on the clock, and --no-beat-sync's exact clock; each tracker (BeatNet's network, librosa's onsets
as the floor without it) on the clicks, and a library's beats found again once the network is installed."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import soundfile

from music_mood.audio import estimate_tempo
from music_mood.beats import TRACKER_ENV, beat_times, downbeat_times, grid_tempo, track_beats
from music_mood.build import build_library
from music_mood.display import format_soundtrack
from music_mood.library import LibraryPaths, load_database
from music_mood.mix import mix_soundtrack
from music_mood.plan import Plan
from music_mood.query import Query
from music_mood.soundtrack import arrange_soundtrack
from tests.conftest import put_in_new_music

pytestmark = pytest.mark.usefixtures("default_beat_tracker")
RATE = 48_000
FIRST_BEAT_S = 0.25
# (mood folder, bpm): tempos whose beats do not fall on whole multiples of the photo length asked for
CLICKS = (("calm", 100.0), ("happy", 120.0), ("energetic", 132.0))
SECONDS = 40.0
TINY_MIN_DROP = 1e-6
TOLERANCE_S = 0.025  # a beat placed within 25 ms of the click (onset frames of 10.7 ms; a click is seen early)


def accented_clicks(bpm: float, seconds: float = SECONDS) -> np.ndarray:
    """A click on every beat from FIRST_BEAT_S, and on every fourth (the downbeat, from the first) a kick too: a
    60 Hz thump of 80 ms under the click, as a bar's one is heard in real music."""
    audio = np.zeros(int(seconds * RATE), np.float32)
    n, kick_n = int(0.01 * RATE), int(0.08 * RATE)
    click = np.sin(2 * np.pi * 1000 * np.arange(n) / RATE) * np.exp(-np.arange(n) / (0.002 * RATE))
    kick = 0.8 * np.sin(2 * np.pi * 60 * np.arange(kick_n) / RATE) * np.exp(-np.arange(kick_n) / (0.03 * RATE))
    for i, beat in enumerate(true_beats(bpm, seconds)):
        start = round(beat * RATE)
        audio[start:start + n] += 0.5 * click.astype(np.float32)
        if i % 4 == 0:
            audio[start:start + kick_n] += kick.astype(np.float32)
    return audio


def true_beats(bpm: float, seconds: float = SECONDS) -> np.ndarray:
    return np.arange(FIRST_BEAT_S, seconds - 0.1, 60 / bpm)


@pytest.fixture
def clicks_library(isolated_library, clap_audio, tmp_path):
    """A library of the CLICKS tracks (wav) and one drone without a beat, built by the product's own builder."""
    files = []
    for mood, bpm in CLICKS:
        files.append(tmp_path / "clicks" / mood / f"{bpm:g} bpm.wav")
        files[-1].parent.mkdir(parents=True)
        soundfile.write(files[-1], accented_clicks(bpm), RATE, subtype="FLOAT")
    drone = tmp_path / "clicks" / "tender" / "drone.wav"
    drone.parent.mkdir(parents=True)
    t = np.arange(int(SECONDS * RATE)) / RATE
    soundfile.write(drone, (0.3 * np.sin(2 * np.pi * 110 * t)).astype(np.float32), RATE, subtype="FLOAT")
    put_in_new_music(isolated_library, [*files, drone])
    report = build_library(clap_audio, LibraryPaths.at(isolated_library), progress=False)
    assert not report.failed and len(report.added) == len(CLICKS) + 1
    return load_database(LibraryPaths.at(isolated_library))


def _record(db, name: str) -> dict:
    return next(t for t in db.tracks if t["file_path"].endswith(name))


def _photos(db, names: list[str]) -> list[tuple[str, Query]]:
    """Photos whose queries are the named tracks' own vectors: each group of photos picks its track."""
    photos = []
    for i, name in enumerate(names):
        row = db.row_of_file(_record(db, name)["file_path"])
        photos.append((f"/photos/{i}.jpg", Query(caption=name, mood_words=[], query_text=name,
                                                 vector=np.asarray(db.vectors[row], np.float32))))
    return photos


def _near(times, wanted, tolerance: float) -> bool:
    return bool(len(wanted)) and all(np.abs(np.asarray(wanted) - t).min() <= tolerance for t in np.atleast_1d(times))


def _playing(plan: Plan, t: float):
    """The piece playing at soundtrack time t (the one that starts there, at a boundary)."""
    pieces = [p for scene in plan.scenes for p in scene.pieces]
    return next(p for p in reversed(pieces) if p.start_s <= t + 1e-9)


def test_each_track_added_keeps_its_beats_and_downbeats(clicks_library):
    for mood, bpm in CLICKS:
        record = _record(clicks_library, f"{bpm:g} bpm.wav")
        assert record["bpm"] == pytest.approx(bpm, abs=2)
        beats, downbeats = beat_times(record["beats"]), downbeat_times(record["beats"])
        truth = true_beats(bpm)
        hits = np.mean([np.abs(beats - t).min() <= TOLERANCE_S for t in truth])
        assert hits >= 0.95, (mood, bpm, hits)
        assert _near(downbeats[1:-1], truth[::4], TOLERANCE_S), (mood, bpm, downbeats[:4], truth[:8:4])
    assert _record(clicks_library, "drone.wav")["beats"] is None  # no steady beat: none stored


def test_photos_change_on_the_beat_and_scenes_on_the_downbeat(clicks_library):
    db = clicks_library
    names = ["100 bpm.wav"] * 4 + ["132 bpm.wav"] * 4
    asked = 2.2  # 3.67 beats at 100 BPM, 4.84 at 132: never a whole number
    plan = arrange_soundtrack(db, _photos(db, names), seconds_per_photo=asked, scene_min_drop=TINY_MIN_DROP)
    assert plan.beat_sync and [scene.photos for scene in plan.scenes] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    for photo in plan.photos[1:]:  # each change on a beat of the music playing then
        piece = _playing(plan, photo.start_s)
        truth = true_beats(piece.tempo_bpm and _true_bpm(piece.file_path))
        assert _near(photo.start_s - piece.start_s + piece.track_start_s, truth, TOLERANCE_S), photo
    for scene in plan.scenes:  # a scene starts its track on a downbeat; the one before ends on a bar line
        first = scene.pieces[0]
        assert _near(first.track_start_s, true_beats(_true_bpm(first.file_path))[::4], TOLERANCE_S)
        if scene.index:
            before = plan.scenes[scene.index - 1].pieces[-1]
            assert _near(before.track_end_s, true_beats(_true_bpm(before.file_path))[::4], TOLERANCE_S)
    for photo in plan.photos:  # whole numbers of beats, close to the length asked (the scene's move onto its bar
        period = 60 / _true_bpm(_playing(plan, photo.start_s).file_path)  # line shared by its photos)
        beats = (photo.end_s - photo.start_s) / period
        assert abs(beats - round(beats)) <= 0.05 and abs(photo.end_s - photo.start_s - asked) <= 1.5 * period, photo
    last = plan.scenes[-1].pieces[-1]
    assert abs(plan.total_s - len(names) * asked) <= 60 / _true_bpm(last.file_path) + 1e-6
    second = plan.scenes[1].pieces[0]  # whole beats of the outgoing track, about 1.5 s
    beats_out = second.crossfade_s / (60 / _true_bpm(plan.scenes[0].pieces[-1].file_path))
    assert abs(beats_out - round(beats_out)) <= 0.05 and 0.9 <= second.crossfade_s <= 2.1
    data = plan.to_dict()
    for scene_data, scene in zip(data["scenes"], plan.scenes):
        for piece_data, piece in zip(scene_data["pieces"], scene.pieces):
            assert piece_data["tempo_bpm"] == pytest.approx(_true_bpm(piece.file_path), abs=2)
            assert piece_data["beats_s"] and set(piece_data["downbeats_s"]) <= set(piece_data["beats_s"])
            assert all(piece.start_s - 1e-3 <= t < piece.end_s for t in piece_data["beats_s"])
    assert Plan.from_dict(data) == plan
    first = plan.scenes[0].pieces[0]  # where its stretch starts, in bars and beats: on a downbeat, beat 1
    downs = true_beats(_true_bpm(first.file_path))[::4]
    assert first.start_beat == 1 and first.start_bar == int(np.abs(downs - first.track_start_s).argmin()) + 1
    table = format_soundtrack(plan)
    assert f"bar {first.start_bar}.1" in table and f"{first.tempo_bpm:.1f} BPM" in table
    mixed = mix_soundtrack(plan)
    assert mixed.shape == (round(plan.total_s * 44100), 2) and float(np.abs(mixed).max()) > 0.05


def _true_bpm(file_path: str) -> float:
    return next(bpm for mood, bpm in CLICKS if file_path.endswith(f"{bpm:g} bpm.wav"))


def test_without_beat_sync_or_without_a_beat_the_clock_is_kept(clicks_library):
    db = clicks_library
    plan = arrange_soundtrack(db, _photos(db, ["120 bpm.wav"] * 5), seconds_per_photo=2.2, beat_sync=False)
    assert not plan.beat_sync and plan.total_s == 5 * 2.2
    assert [p.start_s for p in plan.photos] == pytest.approx([i * 2.2 for i in range(5)], abs=1e-9)
    assert all(not piece.beats_s and piece.crossfade_s is None for scene in plan.scenes for piece in scene.pieces)
    drone = arrange_soundtrack(db, _photos(db, ["drone.wav"] * 4), seconds_per_photo=2.2)
    assert drone.beat_sync and drone.total_s == pytest.approx(4 * 2.2)  # no beat in the music: by the clock
    assert [p.start_s for p in drone.photos] == pytest.approx([i * 2.2 for i in range(4)], abs=1e-9)
    assert all(a.end_s == b.start_s for a, b in itertools.pairwise(drone.photos))


@pytest.mark.parametrize("network", [True, False], ids=["beatnet", "floor"])
def test_each_tracker_finds_the_clicks_and_their_downbeats(network):
    """BeatNet's network and the floor (librosa's onsets alone) each place every click's beat within 25 ms, and
    the downbeats on the accented clicks."""
    for _, bpm in CLICKS:
        audio = accented_clicks(bpm)
        grid = track_beats(audio, RATE, estimate_tempo(audio, RATE), network=network)
        truth = true_beats(bpm)
        assert grid["tracker"] == ("beatnet" if network else "librosa")
        assert np.mean([np.abs(beat_times(grid) - t).min() <= TOLERANCE_S for t in truth]) >= 0.95, bpm
        assert _near(downbeat_times(grid)[1:-1], truth[::4], TOLERANCE_S), (bpm, downbeat_times(grid)[:3])
        assert grid_tempo(grid) == pytest.approx(bpm, abs=1.5)


def test_a_build_without_beatnet_says_so_and_the_next_with_it_finds_the_beats_again(isolated_library, clap_audio,
                                                                                   sample_tracks, monkeypatch):
    """Without BeatNet's weights a build finds the beats with the floor and warns; once they are installed, a build
    with fill_tempo finds those beats again from a decode, embedding nothing, in one commit; then nothing is left."""
    from music_mood import beatnet, build

    paths = LibraryPaths.at(isolated_library)
    put_in_new_music(isolated_library, sample_tracks[:2])
    with monkeypatch.context() as missing:
        missing.setattr(beatnet, "available", lambda: False)
        report = build_library(clap_audio, paths, progress=False)
    assert [w for w in report.warnings if "BeatNet's weights are not installed" in w]
    before = load_database(paths)
    assert len(before) == 2 and {t["beats"]["tracker"] for t in before.tracks} == {"librosa"}

    def no_embedding(*args, **kwargs):
        raise AssertionError("a track was embedded again to find its beats")

    monkeypatch.setattr(build, "embed_track", no_embedding)
    report = build_library(clap_audio, paths, progress=False, fill_tempo=True)
    after = load_database(paths)
    assert len(report.tempo_read) == 2 and not report.warnings
    assert {t["beats"]["tracker"] for t in after.tracks} == {"beatnet"}
    assert all(t["bpm"] == grid_tempo(t["beats"]) for t in after.tracks)
    np.testing.assert_array_equal(after.vectors, before.vectors)
    assert not build_library(clap_audio, paths, progress=False, fill_tempo=True).tempo_read


def test_the_floor_can_be_chosen_where_beatnet_is_installed(isolated_library, clap_audio, sample_tracks,
                                                            monkeypatch):
    """$MUSIC_MOOD_BEAT_TRACKER=librosa: beats by the floor, no warning, and a build with fill_tempo leaves them."""
    monkeypatch.setenv(TRACKER_ENV, "librosa")
    paths = LibraryPaths.at(isolated_library)
    put_in_new_music(isolated_library, sample_tracks[:1])
    report = build_library(clap_audio, paths, progress=False)
    assert not report.warnings and load_database(paths).tracks[0]["beats"]["tracker"] == "librosa"
    assert not build_library(clap_audio, paths, progress=False, fill_tempo=True).tempo_read
