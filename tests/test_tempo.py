"""Tempo (BPM): the estimator on click tracks of known tempo, the stored bpm, old libraries gaining it without
re-embedding, and the --bpm filter against a brute-force reference."""
from __future__ import annotations

import json

import numpy as np
import pytest

import music_to_vector
import recommend as recommend_cli
from music_mood.audio import decode_audio, estimate_tempo, read_rhythm
from music_mood.database import Database
from music_mood.library import LibraryPaths, load_database, save_database
from music_mood.recommendation import recommend
from music_mood.search import BPM_RANGE_FORMS, Filters, parse_bpm_range, rank_tracks

pytestmark = pytest.mark.usefixtures("default_beat_tracker")  # the tempo of the beats the product finds
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
    """Every real sample track has its bpm, one decimal: the tempo of its beat grid (audio.read_rhythm) for its
    decoded audio, within a few per cent of the estimator's (which says whether there is a beat at all), or its
    half, double, two thirds or four thirds (the estimator's usual errors on real music, beats.py)."""
    db = load_database(LibraryPaths.at(built_library))
    assert len(db) == 6
    for track in db.tracks:
        bpm = track["bpm"]
        assert isinstance(bpm, float) and 40 <= bpm <= 240 and bpm == round(bpm, 1)
        audio = decode_audio(built_library / track["file_path"], RATE)
        assert bpm == read_rhythm(audio, RATE)["bpm"]
        ratio = bpm / estimate_tempo(audio, RATE)
        assert min(abs(ratio / usual - 1) for usual in (1, 0.5, 2, 2 / 3, 3 / 2, 3 / 4, 4 / 3)) < 0.04, ratio


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


# ---------------------------------------------------------------------------------------------- the --bpm filter


def _tempo_db(n=80, d=12, seed=3, **kwargs):
    """Random unit vectors; tempos from 60 to 180 BPM, except every 7th track (no beat found: None) and every 11th
    (added before tempos were stored: no bpm at all)."""
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, d)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    tracks = []
    for i in range(n):
        track = {"file_path": f"processed_music/{i}.mp3", "title": f"t{i}", "mood": ["calm", "happy"][i % 2]}
        if i % 11:
            track["bpm"] = None if i % 7 == 0 else round(float(rng.uniform(60, 180)), 1)
        tracks.append(track)
    tracks[5]["bpm"], tracks[6]["bpm"] = 80.0, 110.0  # on the edges of 80-110: both in it
    return Database(vectors=vectors, tracks=tracks, **kwargs), rng


def _in_range(bpm, low, high) -> bool:
    return bpm is not None and (low is None or bpm >= low) and (high is None or bpm <= high)


def _reference(db, query, topk, low, high, mood=None):
    """The ranking written out by hand: every track in the range (and of the mood), by cosine (float64), ties by
    row."""
    scores = np.asarray(db.vectors, np.float64) @ np.asarray(query, np.float64)
    rows = [i for i, t in enumerate(db.tracks) if _in_range(t.get("bpm"), low, high)
            and (mood is None or t["mood"] == mood)]
    return sorted(rows, key=lambda i: (-scores[i], i))[:topk]


def _assert_ranked_as(ranked, expected, db, query):
    """`ranked` is the reference order; two tracks whose cosines differ by float32 rounding alone may swap."""
    scores = np.asarray(db.vectors, np.float64) @ np.asarray(query, np.float64)
    assert len(ranked) == len(expected)
    for (row, score), want in zip(ranked, expected):
        assert row == want or abs(scores[row] - scores[want]) < 1e-6
        assert score == pytest.approx(scores[row], abs=1e-6)
    assert {row for row, _ in ranked} == set(expected) or abs(scores[ranked[-1][0]] - scores[expected[-1]]) < 1e-6


@pytest.mark.parametrize("text,low,high", [("80-110", 80, 110), ("80-", 80, None), ("-110", None, 110),
                                           ("120", 114, 126), ("80–110", 80, 110), (" 95 - 140 ", 95, 140)])
@pytest.mark.parametrize("mood", [None, "happy"])
def test_the_bpm_filter_equals_brute_force(text, low, high, mood):
    db, rng = _tempo_db()
    parsed = parse_bpm_range(text)
    assert [None if v is None else round(v, 6) for v in parsed] == [low, high]
    for topk in (1, 5, 80):
        query = rng.normal(size=12).astype(np.float32)
        query /= np.linalg.norm(query)
        ranked = rank_tracks(db, query, topk, Filters(moods=mood, bpm=text))
        _assert_ranked_as(ranked, _reference(db, query, topk, low, high, mood), db, query)
        assert all(_in_range(db.tracks[row]["bpm"], low, high) for row, _ in ranked)


def test_the_bpm_filter_on_the_index_path_equals_brute_force():
    """A library large enough for the faiss index (threshold lowered): the filter is applied to its candidates."""
    rng = np.random.default_rng(4)
    centres = rng.normal(size=(40, 32))
    rows = centres[rng.integers(0, 40, 4000)] + rng.normal(size=(4000, 32)) * 0.3
    vectors = (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)
    tracks = [{"file_path": f"processed_music/{i}.mp3", "bpm": round(float(rng.uniform(60, 180)), 1)} for i in
              range(4000)]
    db = Database(vectors=vectors, tracks=tracks, index_min_tracks=1000)
    for query in vectors[:5]:
        ranked = rank_tracks(db, query, 10, Filters(bpm=(100, 140)))
        assert db.search_index() is not None
        _assert_ranked_as(ranked, _reference(db, query, 10, 100, 140), db, query)


def test_recommend_with_a_bpm_filter_lists_the_tempo_and_equals_brute_force(library_copy):
    db = load_database(LibraryPaths.at(library_copy))
    like = db.tracks[0]["file_path"]
    tempos = sorted(t["bpm"] for t in db.tracks[1:])
    low, high = tempos[1], tempos[-2]  # leaves out the slowest and the fastest other track
    rec = recommend(None, None, db, like=like, topk=10, max_per_artist=0, filters=Filters(bpm=(low, high)))
    expected = [i for i in _reference(db, db.vectors[0], len(db), low, high) if i != 0]
    assert [t.file_path for t in rec.results] == [db.tracks[i]["file_path"] for i in expected]
    assert [t.bpm for t in rec.results] == [db.tracks[i]["bpm"] for i in expected]
    assert all(row["bpm"] == t.bpm for row, t in zip(rec.to_dict()["results"], rec.results))


def test_cli_bpm_filter_shows_the_tempo_in_json_and_table(library_copy, checkpoints, call_cli):
    db = load_database(LibraryPaths.at(library_copy))
    like = db.tracks[0]["file_path"]
    done = call_cli(recommend_cli.main, "--like", like, "--bpm", "-500", "--json", "--clap-model",
                    checkpoints["clap"])
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)["results"]
    assert {r["file_path"]: r["bpm"] for r in results} == {t["file_path"]: t["bpm"] for t in db.tracks[1:]}
    table = call_cli(recommend_cli.main, "--like", like, "--bpm", "-500", "--clap-model", checkpoints["clap"])
    query, header, first = table.stdout.splitlines()[:3]  # "more like" has no caption or mood words
    assert query.split()[0] == "query:" and header.split()[6] == "bpm"
    assert f"{results[0]['bpm']:.1f}" in first.split()


@pytest.mark.parametrize("value,message", [
    ("110-80", "'110-80' is not a tempo range: 110 is above 80"),
    ("fast", f"'fast' is not a tempo range: give {BPM_RANGE_FORMS}"),
    ("-", f"'-' is not a tempo range: give {BPM_RANGE_FORMS}"),
    ("80-110-140", f"'80-110-140' is not a tempo range: give {BPM_RANGE_FORMS}"),
    ("nan", "'nan' is not a tempo range: a tempo is a number of beats per minute, 0 or more"),
])
def test_cli_bad_bpm_range_is_one_usage_line_exit_2(value, message, library_copy, call_cli):
    paths = LibraryPaths.at(library_copy)
    before = paths.metadata.read_bytes()
    done = call_cli(recommend_cli.main, "--text", "x", "--bpm", value)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines()[-1] == f"recommend.py: error: argument --bpm: {message}"
    assert paths.metadata.read_bytes() == before


def test_a_bpm_filter_that_keeps_no_track_names_the_tempos_there_are(library_copy, checkpoints, call_cli):
    paths = LibraryPaths.at(library_copy)
    tempos = [t["bpm"] for t in load_database(paths).tracks]
    done = call_cli(recommend_cli.main, "--text", "x", "--bpm", "300-400", "--clap-model",
                    checkpoints["clap"])
    assert done.returncode == 1 and done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line == (f"Error: no track in the library has a tempo of 300-400 BPM; the tempos it has: "
                    f"{min(tempos):g}-{max(tempos):g} BPM")
    _forget_tempos(paths)
    done = call_cli(recommend_cli.main, "--text", "x", "--bpm", "80-", "--mood", "calm", "--clap-model",
                    checkpoints["clap"])
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert line == ("Error: no track in the library has the mood calm and a tempo of at least 80 BPM; the moods it "
                    "has: calm, energetic, happy, nostalgic, tender; no track has a tempo (6 tracks added before "
                    "tempos were stored have none yet: run python music_to_vector.py to read them)")


def test_the_library_listing_shows_each_tempo(library_copy, call_cli):
    done = call_cli(music_to_vector.main, "--list")
    header, *rows = done.stdout.splitlines()
    assert header.split()[:7] == ["#", "title", "artist", "mood", "genre", "bpm", "length"]
    tracks = {t["file_path"]: t for t in load_database(LibraryPaths.at(library_copy)).tracks}
    for row in rows:
        assert f"{tracks[row.split()[-1]]['bpm']:.1f}" in row.split()


def test_a_kill_while_tempos_are_committed_leaves_the_old_or_the_new_library(isolated_library, clap_audio, checkpoints,
                                                                            tmp_path):
    """The tempo-only commit of an old library, killed at each of its crash points (music_mood.storage): the library
    loads with every track once and its vectors untouched, and either no track or every track has its tempo; the
    next run finishes the job. The library is of short click tracks of known tempo (the crash points are the same
    for any audio; every run reads each track's tempo again, which is quicker on them than on real tracks), and
    the runs are children forked with the builder imported (tests/forked.py)."""
    import shutil
    import signal

    import soundfile

    from music_mood.build import build_library
    from music_mood.storage import CRASH_AT_ENV, CRASH_LOG_ENV
    from tests import forked
    from tests.conftest import put_in_new_music
    from tests.test_crash import check_library

    clicks = []
    for mood, bpm in (("calm", 84), ("happy", 117.5), ("energetic", 141), ("tender", 100)):
        clicks.append(tmp_path / "clicks" / mood / f"{bpm} bpm.wav")
        clicks[-1].parent.mkdir(parents=True)
        soundfile.write(clicks[-1], click_track(bpm, seconds=8), RATE, subtype="FLOAT")
    put_in_new_music(isolated_library, clicks)
    paths = LibraryPaths.at(isolated_library)
    report = build_library(clap_audio, paths, progress=False)
    assert not report.failed and len(report.added) == len(clicks)
    was = _forget_tempos(paths)
    assert sorted(was.values()) == pytest.approx([84, 100, 117.5, 141], abs=2)  # a tempo to lose and to find again
    vectors = load_database(paths).vectors.copy()
    expected = {t["sha256"] for t in load_database(paths).tracks}
    base = tmp_path / "base"
    shutil.copytree(isolated_library, base)
    log = tmp_path / "points.txt"
    build = ("music_to_vector", "--clap-model", checkpoints["clap"])
    done = forked.run(*build, folder=tmp_path, env_extra={CRASH_LOG_ENV: str(log)})
    assert done.returncode == 0, done.stderr
    points = [line.split("\t", 1) for line in log.read_text().splitlines()]
    assert len(points) >= 5
    for number, what in points:
        shutil.rmtree(isolated_library)
        shutil.copytree(base, isolated_library)
        killed = forked.run(*build, folder=tmp_path, env_extra={CRASH_AT_ENV: number})
        assert killed.returncode == -signal.SIGKILL, f"not killed at point {number} ({what}): {killed.stderr}"
        check_library(isolated_library, expected)
        db = load_database(paths)
        np.testing.assert_array_equal(db.vectors, vectors)
        tempos = {t["file_path"]: t.get("bpm", "none") for t in db.tracks}
        assert tempos in ({path: "none" for path in was}, was), f"a mix after a kill at {what}"
        again = forked.run(*build, folder=tmp_path)
        assert again.returncode == 0, again.stderr
        assert {t["file_path"]: t["bpm"] for t in load_database(paths).tracks} == was
