"""Results people want: the per-artist/album cap, MMR diversity, "more like this" and the shared mood words."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import recommend as recommend_cli
from music_mood.database import Database, UnknownTrackError
from music_mood.display import format_recommendation
from music_mood.library import LibraryPaths, load_database
from music_mood.recommendation import recommend
from music_mood.search import DEFAULT_MAX_PER_ARTIST, Filters, rank_results, rank_tracks, shared_mood_words

ARTISTS = ["Ana", "ana ", "Bo", "", "Cy"]  # "Ana" and "ana " are one artist; "" is no artist


def _artist_db(n=60, d=12, seed=1):
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, d)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    tracks = [{"file_path": f"processed_music/{i}.mp3", "title": f"t{i}", "artist": ARTISTS[i % 5],
               "album": ["", "First", "Second"][i % 3] if i % 5 != 4 else "", "mood": ["calm", "happy"][i % 2],
               "genre": "jazz"} for i in range(n)]
    return Database(vectors=vectors, tracks=tracks), rng


def _unit(rng, d=12):
    q = rng.normal(size=d).astype(np.float32)
    return q / np.linalg.norm(q)


def _groups(track):
    """The reference's own reading of the cap: one artist case- and space-insensitively, an album within it."""
    artist, album = (str(track.get(key, "")).strip().lower() for key in ("artist", "album"))
    return [] if not artist else [("a", artist)] + ([("b", artist, album)] if album else [])


def _capped_reference(db, order, topk, cap):
    counts, kept = {}, []
    for i in order:
        if len(kept) == topk:
            break
        if cap and any(counts.get(g, 0) >= cap for g in _groups(db.tracks[i])):
            continue
        kept.append(i)
        for g in _groups(db.tracks[i]):
            counts[g] = counts.get(g, 0) + 1
    return kept


def _mmr_reference(db, q, topk, lam, cap, allowed):
    """MMR written out by hand: each step, the candidate with the best (1-λ)·cos(q) − λ·max cos(chosen)."""
    counts, chosen, left = {}, [], sorted(allowed)
    while len(chosen) < topk and left:
        def gain(i):
            closest = max((float(db.vectors[i] @ db.vectors[j]) for j in chosen), default=0.0)
            return (1 - lam) * float(db.vectors[i] @ q) - lam * closest
        best = max(left, key=lambda i: (gain(i), float(db.vectors[i] @ q), -i))  # ties: the better ranked
        left.remove(best)
        if cap and any(counts.get(g, 0) >= cap for g in _groups(db.tracks[best])):
            continue
        chosen.append(best)
        for g in _groups(db.tracks[best]):
            counts[g] = counts.get(g, 0) + 1
    return chosen


@pytest.mark.parametrize("cap", [0, 1, 2, DEFAULT_MAX_PER_ARTIST])
@pytest.mark.parametrize("topk", [3, 10, 60])
def test_cap_equals_brute_force_reference(cap, topk, monkeypatch):
    db, rng = _artist_db()
    monkeypatch.setattr("os.path.isfile", lambda path: True)  # the fake library has no files; all are present
    for _ in range(4):
        q = _unit(rng)
        scores = db.vectors @ q
        order = sorted(range(len(db)), key=lambda i: (-scores[i], i))
        ranked, missing = rank_results(db, q, topk, max_per_artist=cap)
        assert missing == []
        assert [i for i, _ in ranked] == _capped_reference(db, order, topk, cap)
        np.testing.assert_allclose([s for _, s in ranked], scores[[i for i, _ in ranked]], atol=1e-6)
        if cap:
            artists = [db.tracks[i]["artist"].strip().lower() for i, _ in ranked]
            assert max(artists.count(a) for a in set(artists) - {""}) <= cap
    if cap == 1 and topk == 60:  # tracks with no artist are not one artist: all twelve are listed
        assert sum(db.tracks[i]["artist"] == "" for i, _ in ranked) == 12


def test_no_cap_and_no_diversity_is_the_pure_ranking(monkeypatch):
    db, rng = _artist_db()
    monkeypatch.setattr("os.path.isfile", lambda path: True)
    q = _unit(rng)
    assert rank_results(db, q, 10, max_per_artist=0, diversity=0.0)[0] == rank_tracks(db, q, 10)


@pytest.mark.parametrize("lam", [0.2, 0.5, 0.8, 1.0])
@pytest.mark.parametrize("cap", [0, 2])
def test_mmr_equals_brute_force_reference(lam, cap, monkeypatch):
    db, rng = _artist_db()
    monkeypatch.setattr("os.path.isfile", lambda path: True)
    allowed = [i for i, t in enumerate(db.tracks) if t["mood"] == "calm"]
    for _ in range(3):
        q = _unit(rng)
        ranked, _ = rank_results(db, q, 8, Filters(moods="calm"), max_per_artist=cap, diversity=lam)
        assert [i for i, _ in ranked] == _mmr_reference(db, q, 8, lam, cap, allowed)
        np.testing.assert_allclose([s for _, s in ranked], db.vectors[[i for i, _ in ranked]] @ q, atol=1e-6)


def test_mmr_spreads_out_near_duplicates(monkeypatch):
    """Three copies of the best track: the pure ranking lists them all, MMR lists one and then others."""
    db, rng = _artist_db(n=20)
    monkeypatch.setattr("os.path.isfile", lambda path: True)
    q = _unit(rng)
    best = int(np.argmax(db.vectors @ q))
    for i in (1, 2):
        db.vectors[(best + i) % 20] = db.vectors[best]
        db.tracks[(best + i) % 20]["artist"] = ""
    db.tracks[best]["artist"] = ""
    pure = [i for i, _ in rank_results(db, q, 3, max_per_artist=0)[0]]
    assert sorted(pure) == sorted([best, (best + 1) % 20, (best + 2) % 20])
    diverse = [i for i, _ in rank_results(db, q, 3, max_per_artist=0, diversity=0.7)[0]]
    assert diverse[0] == min(pure) and len({tuple(db.vectors[i]) for i in diverse}) == 3


@pytest.mark.parametrize("bad", [{"max_per_artist": -1}, {"diversity": -0.1}, {"diversity": 1.5}])
def test_bad_values_are_refused_by_recommend(bad, library_copy):
    db = load_database(LibraryPaths.at(library_copy))
    with pytest.raises(ValueError):
        recommend(None, None, db, like=db.tracks[0]["file_path"], **bad)


# ---------------------------------------------------------------------------------------------- more like this


def test_more_like_this_equals_brute_force_without_the_track(library_copy):
    db = load_database(LibraryPaths.at(library_copy))
    for row, track in enumerate(db.tracks):
        for cap in (0, 1):
            rec = recommend(None, None, db, like=track["file_path"], topk=10, max_per_artist=cap)
            scores = db.vectors @ db.vectors[row]
            order = [i for i in sorted(range(len(db)), key=lambda i: (-scores[i], i)) if i != row]
            expected = _capped_reference(db, order, 10, cap)
            got = [r.file_path for r in rec.results]
            assert got == [db.tracks[i]["file_path"] for i in expected]
            assert track["file_path"] not in got
            assert (rec.caption, rec.mood_words, rec.query_text) == ("", [], f"more like {track['file_path']}")
            np.testing.assert_allclose([r.score for r in rec.results], scores[expected], atol=1e-5)


def test_more_like_this_by_id_or_absolute_path_is_the_same(library_copy):
    db = load_database(LibraryPaths.at(library_copy))
    track = db.tracks[2]
    by_path = recommend(None, None, db, like=track["file_path"])
    assert recommend(None, None, db, like=track["id"]) == by_path
    assert recommend(None, None, db, like=str(library_copy / track["file_path"])) == by_path
    with pytest.raises(UnknownTrackError, match="no track of the library"):
        recommend(None, None, db, like="processed_music/nope.mp3")


def _broken_clap(library_copy, checkpoints, tmp_path):
    """A CLAP the database accepts but that cannot load: a run that succeeds never loaded it."""
    broken = tmp_path / "broken-clap"
    shutil.copytree(checkpoints["clap"], broken)
    for weights in broken.glob("*.safetensors"):
        weights.unlink()
    paths = LibraryPaths.at(library_copy)
    meta = json.loads(paths.metadata.read_text())
    meta["clap_model"] = str(broken)
    paths.metadata.write_text(json.dumps(meta))
    return broken


def test_cli_like_needs_no_model_and_leaves_the_track_out(library_copy, checkpoints, tmp_path, call_cli):
    broken = _broken_clap(library_copy, checkpoints, tmp_path)
    db = load_database(LibraryPaths.at(library_copy))
    path = db.tracks[0]["file_path"]
    done = call_cli(recommend_cli.main, "--like", path, "--json", "--max-per-artist", "0", "--clap-model", broken,
                    "--blip-model", tmp_path / "nope")
    assert done.returncode == 0, done.stderr
    (obj,) = [json.loads(line) for line in done.stdout.splitlines()]
    expected = recommend(None, None, db, like=path, max_per_artist=0).to_dict()
    assert obj == {"image": None, **expected}
    assert len(obj["results"]) == len(db) - 1 and path not in [r["file_path"] for r in obj["results"]]


def test_cli_unknown_like_is_one_line_exit_1(library_copy, checkpoints, call_cli):
    done = call_cli(recommend_cli.main, "--like", "processed_music/nope.mp3", "--clap-model", checkpoints["clap"])
    assert done.returncode == 1 and done.stdout == ""
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("Error: 'processed_music/nope.mp3' is no track of the library")


@pytest.mark.parametrize("args,message", [
    (["--text", "x", "--max-per-artist", "-1"], "argument --max-per-artist: -1 is less than 0"),
    (["--text", "x", "--max-per-artist", "two"], "argument --max-per-artist: 'two' is not a whole number"),
    (["--text", "x", "--diversity", "1.5"], "argument --diversity: 1.5 is not between 0 and 1"),
    (["--text", "x", "--diversity", "-0.2"], "argument --diversity: -0.2 is not between 0 and 1"),
    (["--text", "x", "--diversity", "nan"], "argument --diversity: nan is not between 0 and 1"),
    (["--text", "x", "--diversity", "lots"], "argument --diversity: 'lots' is not a number"),
    (["--text", "x", "--like", "a.mp3"], "--like is the query on its own: give it without IMAGE or --text"),
])
def test_cli_bad_values_are_one_usage_line_exit_2(args, message, call_cli):
    done = call_cli(recommend_cli.main, *args)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines()[-1] == f"recommend.py: error: {message}"


# ---------------------------------------------------------------------------------------------- explanations


def test_shared_mood_words_are_the_photo_words_among_the_tags():
    track = {"mood": "Calm", "genre": "jazz, lo-fi"}
    assert shared_mood_words(track, ["lo-fi", "sad", "calm", "jazzy"]) == ["lo-fi", "calm"]
    assert shared_mood_words({"mood": "", "genre": ""}, ["calm"]) == []


def test_recommend_explains_each_result_in_json_and_table(library_copy, default_models, photos):
    blip, clap = default_models
    db = load_database(LibraryPaths.at(library_copy))
    # Give every track the photo's mood words as tags, a few at a time, so each result shares some of them.
    rec = recommend(blip, clap, db, image=photos["coffee.png"], topk=6, max_per_artist=0)
    words = rec.mood_words
    for i, track in enumerate(db.tracks):
        track["mood"] = words[i % len(words)]
        track["genre"] = "jazz" if i % 2 else words[(i + 1) % len(words)].upper()
    rec = recommend(blip, clap, db, image=photos["coffee.png"], topk=6, max_per_artist=0)
    by_path = {t["file_path"]: t for t in db.tracks}
    for result in rec.results:
        tags = {by_path[result.file_path]["mood"].lower(), by_path[result.file_path]["genre"].lower()}
        assert result.shared_mood_words == [w for w in words if w.lower() in tags] != []
        assert rec.to_dict()["results"][result.rank - 1]["shared_mood_words"] == result.shared_mood_words
    table = format_recommendation("coffee.png", rec)
    assert f"shares the mood words: {', '.join(rec.results[0].shared_mood_words)}" in table
