"""Replacing one scene's track with the next-best (soundtrack.replace_scene_track), against a brute-force reference:
every usable track ranked by cosine to the scene's stored vector, ties by row, the current one and those below it."""
from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest

from music_mood.database import Database, EmptyLibraryError
from music_mood.search import Filters
from music_mood.soundtrack import NoOtherTrackError, Plan, arrange_soundtrack, replace_scene_track, track_stretch
from tests.test_soundtrack import DIM, axis, check_timeline, make_db, photo_queries, round_trips


def random_db(root, rng, count: int, moods=("calm", "happy")) -> Database:
    """`count` tracks of 40-90 s with random unit vectors and random 10 s windows, moods in turn."""
    tracks = []
    for i in range(count):
        duration = float(rng.integers(40, 90))
        windows = [axis(0, 1.0, rng) for _ in range(int(np.ceil(duration / 10)))]
        tracks.append({"name": f"t{i:02d}", "vector": axis(0, 1.0, rng), "duration": duration, "windows": windows,
                       "mood": moods[i % len(moods)]})
    return make_db(root, tracks)


def three_scene_plan(db: Database, rng, **filters) -> Plan:
    """Photos in three clear groups (2, 3 and 2 photos, 4 s each): three scenes."""
    vectors = [axis(group, 0.02, rng) for group, size in ((1, 2), (2, 3), (3, 2)) for _ in range(size)]
    plan = arrange_soundtrack(db, photo_queries(vectors), seconds_per_photo=4.0, filters=Filters(**filters))
    assert len(plan.scenes) == 3
    return plan


def row_of(db: Database, file_path: str) -> int:
    return next(row for row, track in enumerate(db.tracks) if track["file_path"] == file_path)


def reference_order(db: Database, vector, moods=None) -> list[int]:
    """Every track that may play (file present, length known, mood kept), best first, by brute force."""
    vector = np.asarray(vector, dtype=np.float64)
    usable = [row for row, track in enumerate(db.tracks)
              if track["duration_s"] > 0 and (db.root / track["file_path"]).is_file()
              and (moods is None or track["mood"] in moods)]
    return sorted(usable, key=lambda row: (-float(db.vectors[row].astype(np.float64) @ vector), row))


def reference_next(db: Database, plan: Plan, k: int, moods=None) -> int | None:
    """The next-best track for scene k: the first below its current first track that no other scene plays."""
    scene = plan.scenes[k]
    order = reference_order(db, scene.vector, moods)
    elsewhere = {row_of(db, p.file_path) for other in plan.scenes if other is not scene for p in other.pieces}
    current = next((row for row in order if db.tracks[row]["file_path"] == scene.pieces[0].file_path), None)
    below = order[order.index(current) + 1:] if current is not None else order
    return next((row for row in below if row not in elsewhere), None)


def reference_best_start(db: Database, row: int, vector) -> float:
    """The start of the track's window nearest the scene's query, by brute force over its windows."""
    track = db.tracks[row]
    windows = db.segments[track["segment_offset"]:track["segment_offset"] + track["segment_count"]]
    best = int(np.argmax(windows.astype(np.float64) @ np.asarray(vector, dtype=np.float64)))
    return track["last_window_start_s"] if best == track["segment_count"] - 1 else best * 10.0


def test_each_scene_gets_the_reference_next_best_and_nothing_else_changes(tmp_path):
    rng = np.random.default_rng(10)
    db = random_db(tmp_path, rng, 14)
    plan = three_scene_plan(db, rng)
    before = copy.deepcopy(plan)
    for k in range(3):
        new = replace_scene_track(db, plan, k)
        expected = reference_next(db, plan, k)
        (piece,) = new.scenes[k].pieces  # every track is longer than a scene
        assert piece.file_path == db.tracks[expected]["file_path"]
        scene = plan.scenes[k]
        start = reference_best_start(db, expected, scene.vector)
        assert (piece.track_start_s, piece.track_end_s) == track_stretch(db.tracks[expected]["duration_s"], start,
                                                                         scene.end_s - scene.start_s)
        assert piece.score == pytest.approx(float(db.vectors[expected] @ np.asarray(scene.vector)), abs=1e-6)
        assert [s for i, s in enumerate(new.scenes) if i != k] == [s for i, s in enumerate(plan.scenes) if i != k]
        assert new.photos == plan.photos and new.total_s == plan.total_s and not new.tracks_repeat
        kept = new.scenes[k]
        assert (kept.photos, kept.vector, kept.mood_words, kept.query_text) == \
            (scene.photos, scene.vector, scene.mood_words, scene.query_text)
        check_timeline(new, db)
        round_trips(new)
    assert plan == before  # the plan given is not changed


def test_pressing_again_walks_down_the_ranking_until_no_track_is_left(tmp_path):
    rng = np.random.default_rng(11)
    db = random_db(tmp_path, rng, 9)
    plan = three_scene_plan(db, rng)
    elsewhere = {p.file_path for s in plan.scenes[1:] for p in s.pieces}
    order = [db.tracks[row]["file_path"] for row in reference_order(db, plan.scenes[0].vector)]
    walk = [plan.scenes[0].pieces[0].file_path]
    for _ in range(len(db)):  # a walk that went round in circles would never end
        try:
            plan = replace_scene_track(db, plan, 0)
        except NoOtherTrackError as e:
            assert str(e).startswith("scene 1 has no next-best track: every track the library (and the filters) "
                                     "offer after “")
            break
        walk.append(plan.scenes[0].pieces[0].file_path)
        check_timeline(plan, db)
    else:
        pytest.fail(f"{len(db)} presses did not reach the end of a {len(db)}-track ranking: {walk}")
    first = order.index(walk[0])
    assert walk[1:] == [path for path in order[first + 1:] if path not in elsewhere]
    assert len(walk) == len(set(walk))


def test_filters_missing_files_and_unknown_lengths_are_respected(tmp_path):
    rng = np.random.default_rng(12)
    db = random_db(tmp_path, rng, 16)
    plan = three_scene_plan(db, rng, moods=["calm"])
    assert plan.filters == Filters(moods=["calm"])  # stored: the next-best needs no caller to repeat them
    order = reference_order(db, plan.scenes[1].vector, moods=["calm"])
    nxt = reference_next(db, plan, 1, moods=["calm"])
    (tmp_path / db.tracks[nxt]["file_path"]).unlink()  # the next-best's file went away: the one after plays
    after_gone = order[order.index(nxt) + 1:]
    unknown = next(row for row in after_gone if row_of(db, plan.scenes[0].pieces[0].file_path) != row
                   and row_of(db, plan.scenes[2].pieces[0].file_path) != row)
    db.tracks[unknown]["duration_s"] = 0  # a seed-format record: no length, never cut to a scene
    new = replace_scene_track(db, plan, 1)
    assert new.scenes[1].pieces[0].file_path == db.tracks[reference_next(db, plan, 1, moods=["calm"])]["file_path"]
    assert db.tracks[row_of(db, new.scenes[1].pieces[0].file_path)]["mood"] == "calm"
    with pytest.raises(EmptyLibraryError, match="no track in the library has the mood dreamy"):
        replace_scene_track(db, dataclasses.replace(plan, filters=Filters(moods=["dreamy"])), 1)


def test_a_short_next_best_is_continued_like_a_planned_scene(tmp_path):
    db = make_db(tmp_path, [{"name": "best", "vector": axis(0), "duration": 60.0},
                            {"name": "short", "vector": np.float32([0.9, 0.1] + [0] * (DIM - 2)), "duration": 5.0},
                            {"name": "third", "vector": np.float32([0.8, 0.3] + [0] * (DIM - 2)), "duration": 60.0},
                            {"name": "far", "vector": axis(4), "duration": 60.0}])
    db.vectors /= np.linalg.norm(db.vectors, axis=1, keepdims=True)
    plan = arrange_soundtrack(db, photo_queries([axis(0)] * 3), seconds_per_photo=4.0)
    assert [p.file_path for p in plan.scenes[0].pieces] == ["processed_music/best.opus"]
    new = replace_scene_track(db, plan, 0)
    short, following = new.scenes[0].pieces
    assert (short.file_path, short.start_s, short.end_s) == ("processed_music/short.opus", 0.0, 5.0)
    assert (following.file_path, following.start_s, following.end_s) == ("processed_music/third.opus", 5.0, 12.0)
    check_timeline(new, db)
    # Pressed again: below "short" comes "third" (it continued the scene, it is no other scene's), then "far".
    assert [p.file_path for p in replace_scene_track(db, new, 0).scenes[0].pieces] == ["processed_music/third.opus"]


def test_a_current_track_gone_from_the_library_gives_the_best_free_one(tmp_path):
    rng = np.random.default_rng(13)
    db = random_db(tmp_path, rng, 10)
    plan = three_scene_plan(db, rng)
    plan.scenes[2].pieces[0].file_path = "processed_music/removed meanwhile.opus"
    elsewhere = {row_of(db, p.file_path) for s in plan.scenes[:2] for p in s.pieces}
    best_free = next(row for row in reference_order(db, plan.scenes[2].vector) if row not in elsewhere)
    new = replace_scene_track(db, plan, 2)
    assert new.scenes[2].pieces[0].file_path == db.tracks[best_free]["file_path"]


def test_a_library_with_no_track_to_spare_is_a_clear_error(tmp_path):
    db = make_db(tmp_path, [{"name": "a", "vector": axis(0), "duration": 60.0},
                            {"name": "b", "vector": axis(1), "duration": 60.0}])
    plan = arrange_soundtrack(db, photo_queries([axis(0)] * 2 + [axis(1)] * 2), seconds_per_photo=4.0)
    assert len(plan.scenes) == 2
    with pytest.raises(NoOtherTrackError, match=r"^scene 2 has no next-best track: every track the library"):
        replace_scene_track(db, plan, 1)


def test_a_one_scene_plan_that_ran_out_says_no_other_track_matches(tmp_path):
    """With one scene, no track plays elsewhere: the walk down the ranking ends because no other track is left."""
    db = make_db(tmp_path, [{"name": "a", "vector": axis(0), "duration": 60.0},
                            {"name": "b", "vector": axis(1), "duration": 60.0}])
    plan = arrange_soundtrack(db, photo_queries([axis(0)] * 2), seconds_per_photo=4.0)
    assert len(plan.scenes) == 1
    plan = replace_scene_track(db, plan, 0)
    with pytest.raises(NoOtherTrackError) as raised:
        replace_scene_track(db, plan, 0)
    assert str(raised.value) == ("scene 1 has no next-best track: no other track of the library matches the filters "
                                 f"after “{plan.scenes[0].pieces[0].title or plan.scenes[0].pieces[0].file_path}”")


def test_a_scene_or_library_the_plan_does_not_have_is_refused(tmp_path):
    rng = np.random.default_rng(14)
    db = random_db(tmp_path / "here", rng, 8)
    plan = three_scene_plan(db, rng)
    with pytest.raises(IndexError, match="the soundtrack has 3 scene"):
        replace_scene_track(db, plan, 3)
    with pytest.raises(IndexError):
        replace_scene_track(db, plan, -1)
    other = random_db(tmp_path / "there", rng, 8)
    with pytest.raises(ValueError, match="the plan was made from the library in"):
        replace_scene_track(other, plan, 0)
