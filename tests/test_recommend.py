"""recommend() and the CLI: exact ranking, filters, best moments, the JSON contract, exit codes and messages."""
from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import recommend as recommend_cli
from image_to_vector import image_to_query
from music_mood.database import EmptyLibraryError
from music_mood.library import LibraryPaths, load_database
from music_mood.recommendation import recommend
from music_mood.search import Filters, rank_tracks
from tests.conftest import ROOT, run_cli

RESULT_KEYS = {"rank", "title", "artist", "mood", "genre", "bpm", "file_path", "score", "best_segment_start_s",
               "shared_mood_words", "auto_tags", "id"}


def _random_db(n=50, d=16, seed=0):
    from music_mood.database import Database

    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, d)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    tracks = [{"file_path": f"processed_music/{i}.mp3", "title": f"t{i}", "mood": ["calm", "happy"][i % 2],
               "genre": ["jazz", "rock", "folk"][i % 3]} for i in range(n)]
    return Database(vectors=vectors, tracks=tracks), rng


@pytest.mark.parametrize("topk", [1, 5, 50, 80])
def test_ranking_equals_brute_force_cosine(topk):
    db, rng = _random_db()
    for _ in range(5):
        q = rng.normal(size=16).astype(np.float32)
        q /= np.linalg.norm(q)
        cosine = db.vectors @ q / np.linalg.norm(db.vectors, axis=1)
        expected = sorted(range(len(db)), key=lambda i: (-cosine[i], i))[:topk]
        ranked = rank_tracks(db, q, topk)
        assert [i for i, _ in ranked] == expected
        np.testing.assert_allclose([s for _, s in ranked], cosine[expected], atol=1e-6)


def test_ties_keep_library_order():
    db, _ = _random_db(n=6)
    db.vectors[:] = 0
    db.vectors[:, 0] = 1  # one-hot rows: every dot product is exactly 1.0, a true tie
    assert [i for i, _ in rank_tracks(db, db.vectors[0], 4)] == [0, 1, 2, 3]


def test_filters_keep_only_matching_tracks():
    db, _ = _random_db()
    q = db.vectors[7]
    ranked = rank_tracks(db, q, 10, Filters(moods=["Happy"], genres="rock"))
    assert ranked and all(db.tracks[i]["mood"] == "happy" and db.tracks[i]["genre"] == "rock" for i, _ in ranked)
    allowed = [i for i, t in enumerate(db.tracks) if t["mood"] == "happy" and t["genre"] == "rock"]
    scores = db.vectors @ q
    assert [i for i, _ in ranked] == sorted(allowed, key=lambda i: (-scores[i], i))[:10]
    assert rank_tracks(db, q, 10, Filters(moods=["no such mood"])) == []


def _tag_values(db, key):
    return ", ".join(sorted({t[key] for t in db.tracks}))


@pytest.mark.parametrize("key", ["mood", "genre"])
def test_unknown_filter_fails_before_any_model_work_and_lists_what_exists(library_copy, photos, key):
    """No BLIP or CLAP is given: the filter is checked against the library before a model is asked anything."""
    db = load_database(LibraryPaths.at(library_copy))
    filters = {"moods": ["Dreamy", "sad"]} if key == "mood" else {"genres": "jazz"}
    asked = "dreamy or sad" if key == "mood" else "jazz"
    with pytest.raises(EmptyLibraryError) as refused:
        recommend(None, None, db, image=photos["coffee.png"], filters=Filters(**filters))
    assert str(refused.value) == (f"no track in the library has the {key} {asked}; "
                                  f"the {key}s it has: {_tag_values(db, key)}")


def test_filters_that_exclude_each_other_fail_before_model_work():
    from music_mood.database import Database

    vectors = np.eye(2, dtype=np.float32)
    db = Database(vectors=vectors, tracks=[{"file_path": "a.mp3", "mood": "calm", "genre": "Jazz"},
                                           {"file_path": "b.mp3", "mood": "happy", "genre": "rock"}])
    with pytest.raises(EmptyLibraryError) as refused:
        recommend(None, None, db, text="anything", filters=Filters(moods="calm", genres="rock"))
    assert str(refused.value) == ("no track in the library has the mood calm and the genre rock; "
                                  "the moods it has: calm, happy; the genres it has: Jazz, rock")


def _one_hot(*weights):
    vector = np.array(weights, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def test_best_moment_of_a_full_last_window_is_where_it_starts():
    """Window j starts at j * window_s; the last one ends at the track's end, at its recorded start."""
    from music_mood.database import Database
    from music_mood.search import best_segment_start

    tracks = [{"file_path": "a.mp3", "duration_s": 25.0, "segment_offset": 0, "segment_count": 3,
               "last_window_start_s": 15.0},
              {"file_path": "b.mp3", "duration_s": 4.0, "segment_offset": 3, "segment_count": 1,
               "last_window_start_s": 0.0}]
    db = Database(vectors=np.eye(2, 4, dtype=np.float32), tracks=tracks, segments=np.eye(4, dtype=np.float32))
    assert [best_segment_start(db, 0, _one_hot(*np.eye(4)[j])) for j in range(3)] == [0.0, 10.0, 15.0]
    assert best_segment_start(db, 1, _one_hot(0, 0, 0, 1)) == 0.0


def test_old_database_never_gives_its_zero_padded_last_window_as_best_moment():
    """A record without last_window_start_s (an older build) has a padded last window: it is left out."""
    from music_mood.database import Database
    from music_mood.search import best_segment_start

    tracks = [{"file_path": "a.mp3", "duration_s": 25.0, "segment_offset": 0, "segment_count": 3},
              {"file_path": "b.mp3", "duration_s": 4.0, "segment_offset": 3, "segment_count": 1}]
    db = Database(vectors=np.eye(2, 4, dtype=np.float32), tracks=tracks, segments=np.eye(4, dtype=np.float32))
    # The padded window (20-30 s, of which 5 s are music) matches best; the best full one starts at 10 s.
    assert best_segment_start(db, 0, _one_hot(0.1, 0.3, 0.9, 0)) == 10.0
    assert best_segment_start(db, 0, _one_hot(0.9, 0.3, 0.1, 0)) == 0.0
    assert best_segment_start(db, 1, _one_hot(0, 0, 0, 1)) == 0.0  # a short track's one repeat-padded window


def _window_starts(db, track) -> list[float]:
    """Where each of a track's windows starts, as the database records them."""
    count = track["segment_count"]
    return [j * db.window_s for j in range(count - 1)] + [track["last_window_start_s"]]


def test_best_moment_never_starts_less_than_a_window_before_the_end(library_copy, blip, clap_text, photos):
    """Every window of every real track asked for, then real queries: the best moment always has a full window
    of music after it, in a new database and in one written before last_window_start_s was recorded."""
    from music_mood.search import best_segment_start

    paths = LibraryPaths.at(library_copy)
    db = load_database(paths)
    for row, track in enumerate(db.tracks):
        assert track["duration_s"] > db.window_s  # every sample track is longer than one window
        assert track["last_window_start_s"] == pytest.approx(track["duration_s"] - db.window_s, abs=1e-3)
        segments = db.segments[track["segment_offset"]: track["segment_offset"] + track["segment_count"]]
        for segment in segments:
            start = best_segment_start(db, row, segment)
            assert start == _window_starts(db, track)[int(np.argmax(segments @ segment))]
            assert start <= track["duration_s"] - db.window_s + 1e-3
    queries = [{"image": photos[name]} for name in ("coffee.png", "rocket.jpg", "astronaut.png")] + \
              [{"text": text} for text in ("slow piano", "energetic drums", "a quiet ending")]
    meta = json.loads(paths.metadata.read_text())
    for track in meta["tracks"]:
        del track["last_window_start_s"]
    paths.metadata.write_text(json.dumps(meta))
    old = load_database(paths)
    for query in queries:
        for library in (db, old):
            for r in recommend(blip, clap_text, library, topk=len(db), **query).results:
                track = next(t for t in library.tracks if t["file_path"] == r.file_path)
                assert r.best_segment_start_s <= track["duration_s"] - db.window_s + 1e-3


def test_recommend_on_real_library_matches_brute_force(library_copy, blip, clap_text, photos):
    db = load_database(LibraryPaths.at(library_copy))
    for name in ("astronaut.png", "rocket.jpg"):
        rec = recommend(blip, clap_text, db, image=photos[name], topk=4)
        query = image_to_query(blip, clap_text, image=photos[name])
        assert (rec.caption, rec.mood_words, rec.query_text) == (query.caption, query.mood_words, query.query_text)
        scores = db.vectors @ query.vector
        expected = np.argsort(-scores, kind="stable")[:4]
        assert [r.file_path for r in rec.results] == [db.tracks[i]["file_path"] for i in expected]
        assert [r.rank for r in rec.results] == [1, 2, 3, 4]
        for r, i in zip(rec.results, expected):
            track = db.tracks[i]
            segments = db.segments[track["segment_offset"]: track["segment_offset"] + track["segment_count"]]
            assert r.best_segment_start_s == _window_starts(db, track)[int(np.argmax(segments @ query.vector))]
            assert r.score == pytest.approx(float(scores[i]), abs=1e-5)
            assert (r.title, r.mood, r.genre) == (track["title"], track["mood"], track["genre"])


def test_text_only_recommendation(library_copy, clap_text):
    db = load_database(LibraryPaths.at(library_copy))
    rec = recommend(None, clap_text, db, text="slow piano for a rainy night", topk=3)
    assert rec.caption == "" and rec.query_text == "slow piano for a rainy night" and len(rec.results) == 3


def test_tracks_whose_file_is_missing_are_skipped_and_named(library_copy, clap_text, monkeypatch):
    """A deleted file is not recommended; the next tracks fill the top k, and only those candidates are looked at."""
    db = load_database(LibraryPaths.at(library_copy))
    text = "slow piano for a rainy night"
    order = np.argsort(-(db.vectors @ image_to_query(None, clap_text, text=text).vector), kind="stable")
    gone = [db.tracks[i]["file_path"] for i in order[[0, 2]]]
    for path in gone:
        (library_copy / path).unlink()
    looked_at = []
    isfile = os.path.isfile
    monkeypatch.setattr(os.path, "isfile", lambda path: looked_at.append(path) or isfile(path))
    rec = recommend(None, clap_text, db, text=text, topk=3)
    expected = [db.tracks[i]["file_path"] for i in order if db.tracks[i]["file_path"] not in gone][:3]
    assert [r.file_path for r in rec.results] == expected and [r.rank for r in rec.results] == [1, 2, 3]
    assert rec.skipped_missing == gone and rec.to_dict()["skipped_missing"] == gone
    assert sorted(Path(p).relative_to(library_copy).as_posix() for p in looked_at) == sorted(expected + gone)


def test_nothing_to_recommend_when_every_file_is_missing(library_copy, clap_text):
    db = load_database(LibraryPaths.at(library_copy))
    for track in db.tracks:
        (library_copy / track["file_path"]).unlink()
    with pytest.raises(EmptyLibraryError, match=r"missing.*music_to_vector\.py"):
        recommend(None, clap_text, db, text="jazz", topk=2)


def test_empty_library_says_how_to_add_music(clap_text):
    db = load_database(LibraryPaths.at())
    with pytest.raises(EmptyLibraryError, match=r"new_music/.*music_to_vector\.py"):
        recommend(None, clap_text, db, text="jazz")


# ---------------------------------------------------------------------------------------------- CLI


def _cli(call_cli, checkpoints, *args, **kwargs):
    return call_cli(recommend_cli.main, *args, "--blip-model", checkpoints["blip"], "--clap-model", checkpoints["clap"],
                    **kwargs)


def test_cli_json_schema_one_line_per_image(library_copy, checkpoints, photos, call_cli):
    done = _cli(call_cli, checkpoints, photos["coffee.png"], photos["chelsea.png"], "--json", "--topk", "3")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2
    for line, name in zip(lines, ("coffee.png", "chelsea.png")):
        obj = json.loads(line)
        assert set(obj) == {"image", "caption", "mood_words", "query_text", "results", "skipped_missing"}
        assert obj["image"].endswith(name) and isinstance(obj["caption"], str)
        assert len(obj["mood_words"]) == 3 and obj["query_text"].endswith("mood")
        assert len(obj["results"]) == 3 and all(set(r) == RESULT_KEYS for r in obj["results"])
        assert [r["rank"] for r in obj["results"]] == [1, 2, 3]
        assert obj["results"][0]["score"] >= obj["results"][1]["score"] >= obj["results"][2]["score"]
        assert all((library_copy / r["file_path"]).is_file() for r in obj["results"])


def test_cli_warns_once_per_missing_file_and_lists_it_in_json(library_copy, checkpoints, photos, call_cli):
    db = load_database(LibraryPaths.at(library_copy))
    gone = db.tracks[1]["file_path"]
    (library_copy / gone).unlink()
    done = _cli(call_cli, checkpoints, photos["coffee.png"], photos["chelsea.png"], "--json", "--topk", str(len(db)))
    assert done.returncode == 0, done.stderr
    for line in done.stdout.splitlines():
        obj = json.loads(line)
        assert obj["skipped_missing"] == [gone] and len(obj["results"]) == len(db) - 1
        assert gone not in [r["file_path"] for r in obj["results"]]
    assert done.stderr.strip().splitlines() == [
        (f"Warning: {library_copy / gone} is in the library but its file is missing; skipped "
         f"(run python music_to_vector.py to update the library)")]


def test_cli_table_explains_the_pick(library_copy, checkpoints, photos, call_cli):
    done = _cli(call_cli, checkpoints, photos["rocket.jpg"], "--topk", "2", "--text", "space launch")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "caption:" in out and "mood:" in out and "query:   space launch; " in out
    rows = [line for line in out.splitlines() if line.strip()[:2] in ("1 ", "2 ")]
    assert len(rows) == 2 and all("processed_music/" in row for row in rows)


def test_cli_seed_flags_still_work(library_copy, checkpoints, photos, tmp_path, call_cli):
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    paths = LibraryPaths.at(library_copy)
    vectors, meta = moved / "vectors.npy", moved / "meta.json"
    vectors.write_bytes(paths.vectors.read_bytes())
    meta.write_bytes(paths.metadata.read_bytes())
    (moved / "vectors_segments.npy").write_bytes(paths.segments.read_bytes())
    done = _cli(call_cli, checkpoints, photos["coffee.png"], "--topk", "1", "--json", "--vectors", vectors,
                "--meta", meta)
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["results"]) == 1


def test_cli_bad_image_is_one_line_and_others_still_run(library_copy, checkpoints, photos, tmp_path):
    # A new process on purpose: the one end-to-end run of the script as a user runs it (both models, a query, JSON
    # on stdout), and exit 1 as the shell gets it from `raise SystemExit(main())`.
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    done = run_cli("recommend.py", bad, photos["coffee.png"], "--json", "--blip-model", checkpoints["blip"],
                   "--clap-model", checkpoints["clap"])
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"Error: {bad} is not an image (Pillow cannot identify it)"]
    assert len(done.stdout.splitlines()) == 1 and json.loads(done.stdout)["image"].endswith("coffee.png")


def test_directory_as_image_says_it_is_a_directory(library_copy, blip, clap_text, checkpoints, tmp_path, call_cli):
    from image_to_vector import ImageError

    folder = tmp_path / "photos"
    folder.mkdir()
    db = load_database(LibraryPaths.at(library_copy))
    with pytest.raises(ImageError, match=f"^{re.escape(str(folder))} is a directory, not an image file$"):
        recommend(blip, clap_text, db, image=folder)
    done = _cli(call_cli, checkpoints, folder)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [f"Error: {folder} is a directory, not an image file"]


def test_cli_unknown_mood_fails_before_loading_models(library_copy, checkpoints, photos, tmp_path, call_cli):
    """Neither model can load here, so only a check made before loading them can give the filter's message."""
    broken = tmp_path / "clap-without-weights"
    shutil.copytree(checkpoints["clap"], broken)
    for weights in broken.glob("*.safetensors"):
        weights.unlink()
    paths = LibraryPaths.at(library_copy)
    meta = json.loads(paths.metadata.read_text())
    meta["clap_model"] = str(broken)  # the database accepts this CLAP, so the run gets as far as the models
    paths.metadata.write_text(json.dumps(meta))
    done = call_cli(recommend_cli.main, photos["coffee.png"], "--mood", "dreamy", "--blip-model", tmp_path / "nope",
                    "--clap-model", broken)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        ("Error: no track in the library has the mood dreamy; the moods it has: "
         f"{_tag_values(load_database(paths), 'mood')}")]


def test_cli_empty_library_exits_1_with_advice(checkpoints, photos, call_cli):
    done = _cli(call_cli, checkpoints, photos["coffee.png"])
    assert done.returncode == 1 and done.stdout == ""
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("Error: the music library is empty") and "music_to_vector.py" in line


def test_cli_mismatched_database_exits_1(library_copy, checkpoints, photos, tmp_path, call_cli):
    other = tmp_path / "other-clap"
    shutil.copytree(checkpoints["clap"], other)
    done = call_cli(recommend_cli.main, photos["coffee.png"], "--blip-model", checkpoints["blip"],
                    "--clap-model", other)
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert "made with CLAP model" in line and "--rebuild" in line


def test_cli_missing_model_is_one_clear_line(library_copy, checkpoints, photos, tmp_path, call_cli):
    done = call_cli(recommend_cli.main, photos["coffee.png"], "--blip-model", tmp_path / "nope",
                    "--clap-model", checkpoints["clap"])
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("Error: cannot load the BLIP model") and "--blip-model" in line
    assert "no such directory" in line  # not the hub's complaint about repo id characters


@pytest.mark.parametrize("args", [[], ["x.jpg", "--topk", "0"], ["x.jpg", "--topk", "many"],
                                  ["x.jpg", "--precision", "fp8"]])
def test_cli_usage_errors_exit_2(args, call_cli):
    done = call_cli(recommend_cli.main, *args)
    assert done.returncode == 2 and "usage:" in done.stderr and done.stdout == ""


@pytest.mark.parametrize("script", ["recommend.py", "music_to_vector.py", "app.py"])
def test_help_imports_no_torch(script):
    # A new process on purpose: only a fresh interpreter shows what --help imports (this one has torch already).
    code = (f"import runpy, sys; sys.argv = ['{script}', '--help']\n"
            f"try:\n    runpy.run_path({str(ROOT / script)!r}, run_name='__main__')\n"
            "except SystemExit as e:\n    assert e.code == 0, e.code\n"
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'torch imported'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout and "--clap-model" in done.stdout


def test_play_uses_a_player_from_the_best_moment(library_copy, checkpoints, photos, tmp_path, call_cli):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "played.txt"
    fake = bin_dir / "mpv"
    fake.write_text(f"#!/bin/sh\necho \"$@\" > {log}\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    done = _cli(call_cli, checkpoints, photos["coffee.png"], "--play", "--json",
                env_extra={"PATH": f"{bin_dir}{os.pathsep}/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    top = json.loads(done.stdout)["results"][0]
    played = log.read_text().split()
    assert played[-1] == str(library_copy / top["file_path"])
    assert f"--start={top['best_segment_start_s']:.1f}" in played


def test_play_without_a_player_says_why(library_copy, checkpoints, photos, tmp_path, call_cli):
    empty = tmp_path / "no-players"
    empty.mkdir()
    done = _cli(call_cli, checkpoints, photos["coffee.png"], "--play", env_extra={"PATH": str(empty)})
    assert done.returncode == 1
    assert "caption:" in done.stdout  # the results still came
    assert done.stderr.strip().splitlines()[-1].startswith("Error: cannot play: no audio player found")


def test_play_reports_a_player_that_fails(library_copy, checkpoints, photos, tmp_path, call_cli):
    """A player that cannot play (no sound device, say) is an error, not a silent success."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "mpv"
    fake.write_text("#!/bin/sh\necho 'AO: no audio device' >&2\nexit 2\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    done = _cli(call_cli, checkpoints, photos["coffee.png"], "--play",
                env_extra={"PATH": f"{bin_dir}{os.pathsep}/usr/bin:/bin"})
    assert done.returncode == 1
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("Error: cannot play") and "mpv failed (exit 2): AO: no audio device" in line
