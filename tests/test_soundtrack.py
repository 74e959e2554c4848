"""The soundtrack plan: the scene rule, the choice and stretch of each track, plan_soundtrack on tiny models and
real photos and music, and recommend.py --soundtrack's output, exit codes and messages."""
from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import recommend as recommend_cli
from music_mood.database import Database, DatabaseError, EmptyLibraryError
from music_mood.library import LibraryPaths, load_database
from music_mood.query import Query, image_to_query
from music_mood.search import Filters
from music_mood.soundtrack import (
    MAX_PHOTOS,
    MAX_SECONDS_PER_PHOTO,
    MAX_TOTAL_S,
    OUTPUT_EXTENSIONS,
    NoReadablePhotosError,
    Plan,
    arrange_soundtrack,
    plan_soundtrack,
    scene_min_photos,
    shared_words,
    split_scenes,
    track_stretch,
)

DIM = 8
# The tiny random CLAP's text vectors all lie within ~1e-4 of each other (its long random caption outweighs the
# mood words), so the end-to-end tests lower the scene rule's floor; the rule itself is tested at its defaults
# on hand-made vectors below.
TINY_MIN_DROP = 1e-6


def unit(*weights) -> np.ndarray:
    vector = np.zeros(DIM, np.float32)
    vector[:len(weights)] = weights
    return vector / np.linalg.norm(vector)


def axis(i: int, noise: float = 0.0, rng=None) -> np.ndarray:
    vector = np.eye(DIM, dtype=np.float32)[i]
    if noise:
        vector = vector + noise * rng.normal(size=DIM).astype(np.float32)
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def make_db(root: Path, tracks: list[dict]) -> Database:
    """A library of hand-made tracks: each {"name", "vector", "duration", optional "windows" (one unit vector per
    10 s window; default: the track's vector throughout), "mood"}; each file exists (empty) under root."""
    records, segments = [], []
    for track in tracks:
        duration = track["duration"]
        count = max(1, int(np.ceil(duration / 10)))
        windows = track.get("windows") or [track["vector"]] * count
        path = f"processed_music/{track['name']}.opus"
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).touch()
        records.append({"file_path": path, "title": track["name"], "artist": f"artist {track['name']}",
                        "mood": track.get("mood", ""), "genre": "", "duration_s": duration,
                        "segment_offset": len(segments), "segment_count": len(windows),
                        "last_window_start_s": max(0.0, duration - 10)})
        segments += list(windows)
    return Database(vectors=np.stack([t["vector"] for t in tracks]).astype(np.float32), tracks=records,
                    segments=np.stack(segments).astype(np.float32), root=root)


def photo_queries(vectors, mood_words=None) -> list[tuple[str, Query]]:
    return [(f"/photos/{i:02d}.jpg", Query(caption=f"photo {i}", mood_words=list((mood_words or {}).get(i, [])),
                                           query_text=f"photo {i}; calm mood", vector=v))
            for i, v in enumerate(vectors)]


def check_timeline(plan: Plan, db: Database) -> None:
    """What every plan promises: photos and scenes tile [0, total_s); pieces abut, each scene's last ends with it,
    the last piece ends at total_s; each piece's length is its stretch's, which lies inside its track."""
    durations = {t["file_path"]: t["duration_s"] for t in db.tracks}
    assert plan.photos[0].start_s == 0.0 and plan.photos[-1].end_s == plan.total_s
    assert all(a.end_s == b.start_s for a, b in zip(plan.photos, plan.photos[1:]))
    assert [i for scene in plan.scenes for i in scene.photos] == list(range(len(plan.photos)))
    pieces = [piece for scene in plan.scenes for piece in scene.pieces]
    assert pieces[0].start_s == 0.0 and pieces[-1].end_s == plan.total_s
    assert all(a.end_s == b.start_s for a, b in itertools.pairwise(pieces))
    for scene in plan.scenes:
        assert scene.start_s == plan.photos[scene.photos[0]].start_s
        assert scene.end_s == plan.photos[scene.photos[-1]].end_s
        assert scene.pieces[0].start_s == scene.start_s and scene.pieces[-1].end_s == scene.end_s
    for piece in pieces:
        assert piece.end_s > piece.start_s
        assert piece.end_s - piece.start_s == pytest.approx(piece.track_end_s - piece.track_start_s, abs=1e-9)
        assert 0.0 <= piece.track_start_s < piece.track_end_s <= durations[piece.file_path]


def last_beat(plan: Plan) -> float:
    """The beat period of the music that ends the plan (0 for music cut by the clock)."""
    beats = plan.scenes[-1].pieces[-1].beats_s
    return float(np.median(np.diff(beats))) if plan.beat_sync and len(beats) > 1 else 0.0


def round_trips(plan: Plan) -> None:
    again = Plan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert again == plan


# ---------------------------------------------------------------------------------------------- the scene rule


def test_two_clear_groups_make_two_scenes_and_a_uniform_set_one():
    rng = np.random.default_rng(0)
    groups = [axis(0, 0.15, rng) for _ in range(6)] + [axis(1, 0.15, rng) for _ in range(5)]
    assert split_scenes(np.stack(groups)) == [range(0, 6), range(6, 11)]
    uniform = np.stack([axis(0, 0.15, rng) for _ in range(12)])
    assert split_scenes(uniform) == [range(0, 12)]
    identical = np.stack([axis(2)] * 5)
    assert split_scenes(identical) == [range(0, 5)]


def test_three_groups_and_the_rule_is_relative_to_the_set():
    """A drop counts against the set's own neighbour similarity: the same three groups are found whether the
    photos within a group are near-identical (neighbour cosines ~0.999) or only broadly alike (~0.75-0.95)."""
    rng = np.random.default_rng(1)
    for noise in (0.01, 0.15):
        vectors = [axis(g, noise, rng) for g, size in ((0, 4), (3, 3), (5, 5)) for _ in range(size)]
        assert split_scenes(np.stack(vectors)) == [range(0, 4), range(4, 7), range(7, 12)]


def test_a_drop_smaller_than_the_floor_or_the_sets_spread_is_no_scene_change():
    a, b = unit(1, 0), unit(1, 0.3)  # cosine 0.958: a drop of 0.042, under the 0.1 floor
    assert split_scenes(np.stack([a, a, a, b, b, b])) == [range(0, 6)]
    assert split_scenes(np.stack([a, a, a, b, b, b]), min_drop=0.01) == [range(0, 3), range(3, 6)]
    # Neighbours that differ a lot all along: one more such step is no change of scene.
    rng = np.random.default_rng(2)
    wandering = np.stack([unit(*rng.normal(size=DIM)) for _ in range(10)])
    assert len(split_scenes(wandering)) == 1


def test_no_scene_is_shorter_than_its_minimum():
    a, b = axis(0), axis(1)
    # One odd photo is not a scene of its own: the deeper of its two drops starts the next scene.
    scenes = split_scenes(np.stack([a, a, a, b, a, a, a]))
    assert all(len(scene) >= 2 for scene in scenes) and len(scenes) == 2
    assert split_scenes(np.stack([a, a, b, b]), min_photos=3) == [range(0, 4)]  # too short to split
    assert split_scenes(np.stack([a, a, a, b, b, b]), min_photos=3) == [range(0, 3), range(3, 6)]
    assert split_scenes(np.stack([a, b])) == [range(0, 2)]
    assert scene_min_photos(4.0) == 2 and scene_min_photos(1.0) == 8 and scene_min_photos(3.0) == 3
    assert scene_min_photos(30.0) == 2


def test_shared_words_are_the_majoritys_best_first():
    assert shared_words([["calm", "warm", "dreamy"], ["warm", "calm", "sad"], ["warm", "tender", "calm"]]) == \
        ["warm", "calm"]  # both in all three; warm placed better on average
    assert shared_words([["calm", "sad"], ["warm", "sad"]]) == ["sad", "calm", "warm"]  # half is enough
    assert shared_words([["a", "b", "c"], ["d", "e", "f"], ["g", "h", "i"]]) == ["a", "d", "g"]  # none common


# ---------------------------------------------------------------------------------------------- tracks


def test_track_stretch_starts_at_the_best_moment_earlier_to_fit_or_takes_a_short_track_whole():
    assert track_stretch(60.0, 30.0, 12.0) == (30.0, 42.0)
    assert track_stretch(35.0, 25.0, 12.0) == (23.0, 35.0)  # from 25 s only 10 s are left: 2 s earlier
    assert track_stretch(12.0, 0.0, 12.0) == (0.0, 12.0)
    assert track_stretch(5.0, 0.0, 12.0) == (0.0, 5.0)  # shorter than the scene: all of it, then another track


def test_each_scene_gets_its_own_best_track_from_its_best_moment(tmp_path):
    rng = np.random.default_rng(3)
    late_best = [unit(0.3, 0, 1), unit(0.5, 0, 1), unit(0.7, 0, 1), unit(1, 0, 0.1), unit(0.4, 0, 1),
                 unit(0.2, 0, 1)]  # window 3 (30-40 s) is the one that sounds like group 0
    db = make_db(tmp_path, [
        {"name": "other", "vector": unit(0, 0, 1), "duration": 90.0},
        {"name": "sea", "vector": axis(0), "duration": 60.0, "windows": late_best},
        {"name": "city", "vector": axis(1), "duration": 35.0, "windows": [unit(0.2, 1), unit(0.1, 1),
                                                                          unit(0, 1, 0, 0.05)]},
        {"name": "sea2", "vector": unit(1, 0, 0.5), "duration": 120.0},
    ])
    vectors = [axis(0, 0.05, rng) for _ in range(3)] + [axis(1, 0.05, rng) for _ in range(3)]
    plan = arrange_soundtrack(db, photo_queries(vectors), seconds_per_photo=4.0)
    assert [scene.photos for scene in plan.scenes] == [[0, 1, 2], [3, 4, 5]]
    assert plan.total_s == 24.0 and not plan.tracks_repeat
    (sea,), (city,) = (scene.pieces for scene in plan.scenes)
    assert sea.file_path == "processed_music/sea.opus" and (sea.track_start_s, sea.track_end_s) == (30.0, 42.0)
    # city's best moment is its last window (25-35 s): 12 s from there would run past its end, so it starts at 23 s.
    assert city.file_path == "processed_music/city.opus" and (city.track_start_s, city.track_end_s) == (23.0, 35.0)
    assert sea.score == pytest.approx(float(db.vectors[1] @ plan.scenes[0].vector), abs=1e-6)
    for scene, rows in zip(plan.scenes, ([0, 1, 2], [3, 4, 5])):
        mean = np.mean([vectors[i] for i in rows], axis=0)
        np.testing.assert_allclose(scene.vector, mean / np.linalg.norm(mean), atol=1e-6)
    check_timeline(plan, db)
    round_trips(plan)


def test_a_track_shorter_than_its_scene_is_continued_by_the_next_best(tmp_path):
    db = make_db(tmp_path, [
        {"name": "short", "vector": axis(0), "duration": 5.0},
        {"name": "next", "vector": unit(1, 0.2), "duration": 40.0,
         "windows": [unit(0, 1), unit(1, 0.2), unit(0, 1), unit(0, 1)]},
        {"name": "far", "vector": axis(3), "duration": 40.0},
    ])
    plan = arrange_soundtrack(db, photo_queries([axis(0)] * 4), seconds_per_photo=4.0)
    (scene,) = plan.scenes
    short, following = scene.pieces
    assert (short.file_path, short.track_start_s, short.track_end_s) == ("processed_music/short.opus", 0.0, 5.0)
    assert (short.start_s, short.end_s) == (0.0, 5.0)
    # The next-best track continues for the 11 s left, from its own best moment (window 1, at 10 s).
    assert following.file_path == "processed_music/next.opus"
    assert (following.start_s, following.end_s) == (5.0, 16.0)
    assert (following.track_start_s, following.track_end_s) == (10.0, 21.0)
    assert not plan.tracks_repeat
    check_timeline(plan, db)
    round_trips(plan)


def test_no_track_repeats_while_the_library_has_unused_ones(tmp_path):
    rng = np.random.default_rng(4)
    db = make_db(tmp_path, [{"name": f"t{i}", "vector": axis(i % 3, 0.3, rng), "duration": 30.0 + i}
                            for i in range(8)])
    vectors = [axis(g, 0.02, rng) for g in (0, 0, 1, 1, 0, 0, 2, 2, 0, 0) for _ in range(1)]
    plan = arrange_soundtrack(db, photo_queries(vectors), seconds_per_photo=4.0)
    assert len(plan.scenes) == 5
    used = [piece.file_path for scene in plan.scenes for piece in scene.pieces]
    assert len(used) == len(set(used)) and not plan.tracks_repeat
    check_timeline(plan, db)


def test_fewer_tracks_than_scenes_repeat_and_the_plan_says_so(tmp_path):
    db = make_db(tmp_path, [{"name": "a", "vector": axis(0), "duration": 60.0},
                            {"name": "b", "vector": axis(1), "duration": 60.0}])
    vectors = [axis(0)] * 2 + [axis(1)] * 2 + [axis(0)] * 2 + [axis(2)] * 2
    plan = arrange_soundtrack(db, photo_queries(vectors), seconds_per_photo=4.0)
    tracks = [scene.pieces[0].file_path for scene in plan.scenes]
    assert len(plan.scenes) == 4 and plan.tracks_repeat
    assert tracks[:2] == ["processed_music/a.opus", "processed_music/b.opus"]
    assert all(x != y for x, y in itertools.pairwise(tracks))  # a repeat is never the track just before
    check_timeline(plan, db)
    # Both tracks fit two scenes: nothing repeats, nothing is said.
    assert not arrange_soundtrack(db, photo_queries(vectors[:4]), seconds_per_photo=4.0).tracks_repeat


def test_a_one_track_library_fills_a_long_scene_by_repeating_it(tmp_path):
    db = make_db(tmp_path, [{"name": "only", "vector": axis(0), "duration": 7.0}])
    plan = arrange_soundtrack(db, photo_queries([axis(0)] * 5), seconds_per_photo=4.0)
    (scene,) = plan.scenes
    assert [(p.start_s, p.end_s) for p in scene.pieces] == [(0.0, 7.0), (7.0, 14.0), (14.0, 20.0)]
    assert plan.tracks_repeat
    check_timeline(plan, db)


def test_filters_and_missing_files_decide_which_tracks_may_play(tmp_path):
    db = make_db(tmp_path, [{"name": "best", "vector": axis(0), "duration": 60.0, "mood": "happy"},
                            {"name": "calm", "vector": unit(1, 0.5), "duration": 60.0, "mood": "calm"},
                            {"name": "calmer", "vector": unit(1, 0.9), "duration": 60.0, "mood": "calm"}])
    queries = photo_queries([axis(0)] * 3, mood_words={0: ["calm"], 1: ["calm", "warm"], 2: ["warm"]})
    plan = arrange_soundtrack(db, queries, filters=Filters(moods=["calm"]))
    assert plan.scenes[0].pieces[0].file_path == "processed_music/calm.opus"
    assert plan.scenes[0].mood_words == ["calm", "warm"] and plan.scenes[0].shared_mood_words == ["calm"]
    (tmp_path / "processed_music/best.opus").unlink()
    assert arrange_soundtrack(db, queries).scenes[0].pieces[0].file_path == "processed_music/calm.opus"
    for name in ("calm", "calmer"):
        (tmp_path / f"processed_music/{name}.opus").unlink()
    with pytest.raises(EmptyLibraryError, match="every matching track's file is missing"):
        arrange_soundtrack(db, queries)


def test_a_plan_stores_its_filters_and_an_older_plan_without_them_has_none(tmp_path):
    db = make_db(tmp_path, [{"name": "calm", "vector": axis(0), "duration": 60.0, "mood": "calm"},
                            {"name": "happy", "vector": axis(1), "duration": 60.0, "mood": "happy"}])
    for track, bpm in zip(db.tracks, (90.0, 120.0)):
        track["bpm"] = bpm
    filters = Filters(moods=["Calm ", "calm"], bpm="80-100")
    plan = arrange_soundtrack(db, photo_queries([axis(0)] * 2), filters=filters)
    assert plan.filters == filters == Filters(moods=("calm",), bpm=(80.0, 100.0))
    assert plan.to_dict()["filters"] == {"moods": ["calm"], "genres": [], "bpm": [80.0, 100.0]}
    assert [piece.file_path for scene in plan.scenes for piece in scene.pieces] == ["processed_music/calm.opus"]
    round_trips(plan)
    older = plan.to_dict()
    del older["filters"]  # a plan.json written before plans stored their filters
    assert Plan.from_dict(json.loads(json.dumps(older))).filters == Filters()


def test_a_total_length_is_spread_evenly_over_the_photos(tmp_path):
    db = make_db(tmp_path, [{"name": "a", "vector": axis(0), "duration": 60.0}])
    plan = arrange_soundtrack(db, photo_queries([axis(0)] * 3), total_s=10.0)
    assert plan.total_s == 10.0 and plan.seconds_per_photo == pytest.approx(10 / 3)
    assert [p.end_s for p in plan.photos] == pytest.approx([10 / 3, 20 / 3, 10.0])
    check_timeline(plan, db)


# ---------------------------------------------------------------------------------------------- plan_soundtrack


def copies(tmp_path: Path, photos: dict, names: list[str]) -> list[Path]:
    """The photos, in this order, as files of their own (a set with repeated photos, as an album may have)."""
    folder = tmp_path / "album"
    folder.mkdir(exist_ok=True)
    paths = []
    for i, name in enumerate(names):
        target = folder / f"{i:02d}-{name}"
        shutil.copyfile(photos[name], target)
        paths.append(target)
    return paths


@pytest.mark.parametrize("runtime", ["torch fp32", "default"])
def test_photos_described_in_a_batch_read_as_they_do_alone(blip, default_models, photos, runtime, monkeypatch):
    """describe_pixels runs the vision passes of several photos as one batch: each photo still gets the caption
    and mood words describe_image gives it alone, a photo given twice is described once, and read_photos makes
    one vision pass per vision_batch_size(blip) photos."""
    from music_mood.describe import describe_image, describe_pixels, forget_descriptions
    from music_mood.images import open_image
    from music_mood.soundtrack import read_photos

    model = blip if runtime == "torch fp32" else default_models[0]
    names = ["coffee.png", "rocket.jpg", "coffee.png", "astronaut.png", "chelsea.png"]
    forget_descriptions(model)
    alone = [describe_image(model, open_image(photos[name])) for name in names]
    forget_descriptions(model)
    passes = []
    image_features = model.runtime.image_features
    monkeypatch.setattr(model.runtime, "image_features", lambda pixels: passes.append(len(pixels)) or
                        image_features(pixels))
    pixels = [model.runtime.pixel_values(open_image(photos[name])) for name in names]
    assert describe_pixels(model, pixels) == alone
    assert passes == [4]  # coffee.png twice: described once
    forget_descriptions(model)
    passes.clear()
    monkeypatch.setattr(model.runtime, "vision_batch_size", 2)
    described, skipped = read_photos(model, [photos[name] for name in names], progress=False)
    assert [(caption, words) for _, caption, words in described] == alone and skipped == []
    assert passes == [2, 1, 1]  # (coffee, rocket), (coffee: remembered, astronaut), (chelsea)


def test_plan_on_real_photos_and_music_splits_two_groups(library_copy, blip, clap_text, photos, tmp_path):
    """Tiny models and real photos and tracks, through the product's own describing, embedding and ranking."""
    db = load_database(LibraryPaths.at(library_copy))
    album = copies(tmp_path, photos, ["motorcycle_left.png"] * 3 + ["coffee.png"] * 3)
    plan = plan_soundtrack(blip, clap_text, db, album, seconds_per_photo=4.0, text="road trip", progress=False,
                           scene_min_drop=TINY_MIN_DROP)
    assert [scene.photos for scene in plan.scenes] == [[0, 1, 2], [3, 4, 5]]
    assert plan.beat_sync and abs(plan.total_s - 6 * 4.0) <= last_beat(plan) + 1e-6  # within a beat of the clock
    assert plan.text == "road trip" and plan.skipped_photos == []
    assert plan.library_root == str(library_copy)
    used = [piece.file_path for scene in plan.scenes for piece in scene.pieces]
    assert len(used) == len(set(used)) and not plan.tracks_repeat
    check_timeline(plan, db)
    for photo, path in zip(plan.photos, album):
        query = image_to_query(blip, clap_text, image=path, text="road trip")  # what recommend() would read
        assert (photo.path, photo.name) == (str(path), path.name)
        assert (photo.caption, photo.mood_words) == (query.caption, query.mood_words)
    taken = set()
    for scene, group in zip(plan.scenes, (album[:3], album[3:])):
        query = image_to_query(blip, clap_text, image=group[0], text="road trip")
        assert scene.query_text == query.query_text  # three copies of one photo: one query text
        np.testing.assert_allclose(scene.vector, query.vector, atol=1e-6)
        assert scene.mood_words == query.mood_words
        ranking = [db.tracks[row]["file_path"] for row in np.argsort(-(db.vectors @ query.vector), kind="stable")]
        assert scene.pieces[0].file_path == next(path for path in ranking if path not in taken)
        taken |= {piece.file_path for piece in scene.pieces}
    round_trips(plan)


def test_plan_of_a_uniform_set_is_one_scene(library_copy, blip, clap_text, photos, tmp_path):
    db = load_database(LibraryPaths.at(library_copy))
    plan = plan_soundtrack(blip, clap_text, db, copies(tmp_path, photos, ["chelsea.png"] * 5), progress=False,
                           scene_min_drop=TINY_MIN_DROP)
    assert [scene.photos for scene in plan.scenes] == [[0, 1, 2, 3, 4]]
    check_timeline(plan, db)


def test_unreadable_photos_are_left_out_and_named(library_copy, blip, clap_text, photos, tmp_path):
    db = load_database(LibraryPaths.at(library_copy))
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    album = [photos["coffee.png"], bad, photos["rocket.jpg"], tmp_path / "gone.jpg"]
    plan = plan_soundtrack(blip, clap_text, db, album, total_s=9.0, progress=False, beat_sync=False)
    assert [p.path for p in plan.photos] == [str(photos["coffee.png"]), str(photos["rocket.jpg"])]
    gone = tmp_path / "gone.jpg"
    assert plan.skipped_photos == [{"path": str(bad), "error": f"{bad} is not an image (Pillow cannot identify it)"},
                                   {"path": str(gone), "error": f"{gone} does not exist"}]
    assert plan.total_s == 9.0 and plan.photos[1].start_s == 4.5  # the length goes to the photos that are shown
    check_timeline(plan, db)
    round_trips(plan)
    with pytest.raises(NoReadablePhotosError) as refused:
        plan_soundtrack(blip, clap_text, db, [bad, tmp_path / "gone.jpg"], progress=False)
    assert str(refused.value) == (f"none of the 2 photos can be read ({bad} is not an image (Pillow cannot identify "
                                  f"it), and 1 more)")


def test_bad_requests_fail_before_any_model_work(library_copy, photos):
    """No BLIP or CLAP is given: each of these is refused before a model would be asked anything."""
    db = load_database(LibraryPaths.at(library_copy))
    one = [photos["coffee.png"]]
    with pytest.raises(ValueError, match=r"^a soundtrack is for 2 to 200 photos, not 1$"):
        plan_soundtrack(None, None, db, one)
    with pytest.raises(ValueError, match="not 201"):
        plan_soundtrack(None, None, db, one * (MAX_PHOTOS + 1))
    with pytest.raises(ValueError, match="seconds per photo must be a positive number"):
        plan_soundtrack(None, None, db, one * 2, seconds_per_photo=0)
    with pytest.raises(ValueError, match="the total length must be a positive number"):
        plan_soundtrack(None, None, db, one * 2, total_s=float("nan"))
    for bad in (float("inf"), -1.0):
        with pytest.raises(ValueError, match="the total length must be a positive number"):
            plan_soundtrack(None, None, db, one * 2, total_s=bad)
    # Lengths that would run for minutes and fill the memory (1e9 s was tried): refused, naming the limit.
    with pytest.raises(ValueError, match=rf"^seconds per photo may be at most {MAX_SECONDS_PER_PHOTO:g}, not 1e\+09$"):
        plan_soundtrack(None, None, db, one * 2, seconds_per_photo=1e9)
    with pytest.raises(ValueError, match=rf"^the total length may be at most {MAX_TOTAL_S:g}, not 1e\+09$"):
        plan_soundtrack(None, None, db, one * 2, total_s=1e9)
    with pytest.raises(ValueError, match=rf"^200 photos of 50 s would last 10000 s; a soundtrack lasts at most "
                                         rf"{MAX_TOTAL_S:g} s \(30 minutes\)$"):
        plan_soundtrack(None, None, db, one * MAX_PHOTOS, seconds_per_photo=50)
    with pytest.raises(EmptyLibraryError, match="no track in the library has the mood dreamy"):
        plan_soundtrack(None, None, db, one * 2, filters=Filters(moods=["dreamy"]))
    with pytest.raises(EmptyLibraryError, match="the music library is empty"):
        plan_soundtrack(None, None, Database(vectors=np.zeros((0, DIM), np.float32), tracks=[]), one * 2)
    seed_format = Database(vectors=db.vectors, tracks=[{k: v for k, v in t.items() if k != "duration_s"}
                                                       for t in db.tracks], root=db.root)
    with pytest.raises(DatabaseError, match=r"records no track lengths.*--rebuild"):
        plan_soundtrack(None, None, seed_format, one * 2)


# ---------------------------------------------------------------------------------------------- CLI


def _cli(call_cli, checkpoints, *args, **kwargs):
    return call_cli(recommend_cli.main, *args, "--blip-model", checkpoints["blip"], "--clap-model", checkpoints["clap"],
                    **kwargs)


def test_cli_json_is_the_plan(library_copy, checkpoints, photos, call_cli):
    album = [photos[name] for name in ("coffee.png", "chelsea.png", "rocket.jpg")]
    for clock in (False, True):
        done = _cli(call_cli, checkpoints, *album, "--soundtrack", "--json", "--seconds-per-photo", "5", "--text",
                    "cats", *(["--no-beat-sync"] if clock else []))
        assert done.returncode == 0, done.stderr
        (line,) = done.stdout.splitlines()
        plan = Plan.from_dict(json.loads(line))
        assert [p.path for p in plan.photos] == [str(p) for p in album]
        assert plan.beat_sync is not clock and plan.text == "cats" and plan.scenes
        if clock:  # exactly by the clock
            assert plan.total_s == 15.0 and [p.start_s for p in plan.photos] == [0.0, 5.0, 10.0]
        else:
            assert abs(plan.total_s - 15.0) <= last_beat(plan) + 1e-6
        check_timeline(plan, load_database(LibraryPaths.at(library_copy)))
        assert "Warning" not in done.stderr and "Error" not in done.stderr


def test_cli_writes_every_output_the_renderer_knows(library_copy, checkpoints, photos, tmp_path, call_cli):
    import av

    from music_mood.render import OUTPUT_KINDS

    assert set(OUTPUT_KINDS) == set(OUTPUT_EXTENSIONS)  # the CLI accepts exactly what the renderer writes
    album = [photos[name] for name in ("coffee.png", "chelsea.png", "rocket.jpg")]
    outs = {ext: tmp_path / f"trip{ext}" for ext in (".mp4", ".m4a", ".m3u8", ".json")}
    outs[".mp4"].write_bytes(b"an older video, replaced only by a complete one")
    done = _cli(call_cli, checkpoints, *album, "--soundtrack", "--seconds-per-photo", "2",
                *[arg for out in outs.values() for arg in ("--out", out)])
    assert done.returncode == 0, done.stderr
    plan = Plan.from_dict(json.loads(outs[".json"].read_text(encoding="utf-8")))
    assert abs(plan.total_s - 6.0) <= last_beat(plan) + 1e-6
    assert [p.path for p in plan.photos] == [str(p) for p in album]
    with av.open(str(outs[".mp4"])) as video:
        assert [s.type for s in video.streams] == ["video", "audio"]
        assert (video.streams.video[0].codec_context.name, video.streams.audio[0].codec_context.name) == \
            ("h264", "aac")
        assert abs(video.duration / av.time_base - plan.total_s) <= 0.1
    with av.open(str(outs[".m4a"])) as audio:
        assert abs(audio.duration / av.time_base - plan.total_s) <= 0.1
    playlist = outs[".m3u8"].read_text(encoding="utf-8").splitlines()
    assert playlist[0] == "#EXTM3U"
    assert [line for line in playlist if not line.startswith("#")] == \
        [str(library_copy / piece.file_path) for scene in plan.scenes for piece in scene.pieces]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left
    assert done.stdout.startswith("Soundtrack: 3 photos")  # stdout carries the plan; progress goes to stderr


def test_cli_tempo_filter_keeps_the_soundtrack_in_range(library_copy, checkpoints, photos, call_cli):
    """--bpm filters a soundtrack's tracks as it filters one photo's (here a range that keeps two tracks, so the
    soundtrack's long single scene needs them both and repeats one); a range that keeps none is one line, exit 1,
    before any model loads."""
    db = load_database(LibraryPaths.at(library_copy))
    tempos = sorted(t["bpm"] for t in db.tracks if t.get("bpm"))
    low, high = tempos[0], tempos[1]
    album = [photos["coffee.png"], photos["chelsea.png"]]
    done = _cli(call_cli, checkpoints, *album, "--soundtrack", "--json", "--seconds-per-photo", "40",
                "--bpm", f"{low}-{high}")
    assert done.returncode == 0, done.stderr
    plan = Plan.from_dict(json.loads(done.stdout))
    by_path = {t["file_path"]: t for t in db.tracks}
    played = [piece.file_path for scene in plan.scenes for piece in scene.pieces]
    assert played and all(low <= by_path[path]["bpm"] <= high for path in played)
    check_timeline(plan, db)
    done = call_cli(recommend_cli.main, *album, "--soundtrack", "--bpm", "300-400", "--blip-model", "nope",
                    "--clap-model", "nope")
    assert done.returncode == 1 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("Error: ")


def test_cli_table_shows_scenes_photos_tracks_and_why(library_copy, checkpoints, photos, call_cli):
    album = [photos["coffee.png"], photos["chelsea.png"]]
    done = _cli(call_cli, checkpoints, *album, "--soundtrack", "--total-seconds", "30")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith("Soundtrack: 2 photos, 0:30 (15 s a photo), 1 scene\n")
    assert "scene 1  0:00-0:30  photos 1-2" in out
    assert "    1  coffee.png: " in out and "    2  chelsea.png: " in out
    music = [line for line in out.splitlines() if line.startswith("  music")]
    assert len(music) == 1 and "processed_music/" in music[0]
    assert "  why:  " in out


def test_cli_unreadable_photo_among_good_ones_is_named_and_left_out(library_copy, checkpoints, photos, tmp_path,
                                                                    call_cli):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    done = _cli(call_cli, checkpoints, photos["coffee.png"], bad, photos["chelsea.png"], "--soundtrack", "--json")
    assert done.returncode == 1  # as without --soundtrack: a photo failed, the others still gave a result
    assert done.stderr.strip().splitlines() == [f"Warning: {bad} is not an image (Pillow cannot identify it); left out"]
    plan = json.loads(done.stdout)
    assert [p["name"] for p in plan["photos"]] == ["coffee.png", "chelsea.png"]
    assert plan["skipped_photos"] == [{"path": str(bad), "error": f"{bad} is not an image (Pillow cannot identify it)"}]


def test_cli_no_readable_photo_is_one_line(library_copy, checkpoints, tmp_path, call_cli):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    done = _cli(call_cli, checkpoints, bad, tmp_path / "gone.jpg", "--soundtrack")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"Error: none of the 2 photos can be read ({bad} is not an image (Pillow cannot identify it), and 1 more)"]


@pytest.mark.parametrize("where", ["missing folder", "a file as folder", "read-only", "a folder"])
def test_cli_unwritable_out_fails_before_the_models_load(library_copy, photos, tmp_path, call_cli, where):
    """Neither model could load (no such checkpoints): only a check made before loading them gives this line."""
    (tmp_path / "file.txt").write_text("x")
    out, why = {"missing folder": (tmp_path / "nope" / "trip.json", f"the folder {tmp_path / 'nope'} does not exist"),
                "a file as folder": (tmp_path / "file.txt" / "trip.json", f"{tmp_path / 'file.txt'} is not a folder"),
                "read-only": (Path("/sys/trip.json"), "the folder /sys is not writable (Permission denied)"),
                "a folder": (tmp_path, "it is a folder")}[where]
    if where == "a folder":
        out = tmp_path / "trip.json"
        out.mkdir()
    done = call_cli(recommend_cli.main, photos["coffee.png"], photos["chelsea.png"], "--soundtrack", "--out", out,
                    "--blip-model", tmp_path / "no-blip", "--clap-model", tmp_path / "no-clap")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [f"Error: cannot write {out}: {why}"]


def test_cli_out_may_not_change_the_library(library_copy, checkpoints, photos, tmp_path, call_cli):
    """Checked once the library is loaded, before the models: no BLIP could load here."""
    paths = LibraryPaths.at(library_copy)
    music = (f"{paths.processed_music} holds the library's music (the next build would take in a new audio file "
             "there); choose another folder")
    for out, why in ((paths.metadata, f"it is a file of the music library in {library_copy}"),
                     (paths.new_music / "trip.m4a", (f"{paths.new_music} is where the library takes in new music; "
                                                    "choose another folder")),
                     (paths.processed_music / "calm" / "x.wav", music),  # no track's file: still the library's
                     (paths.processed_music / "trip.json", music)):
        before = out.read_bytes() if out.exists() else None
        done = call_cli(recommend_cli.main, photos["coffee.png"], photos["chelsea.png"], "--soundtrack", "--out", out,
                        "--blip-model", tmp_path / "no-blip", "--clap-model", checkpoints["clap"])
        assert done.returncode == 1 and done.stdout == ""
        assert done.stderr.strip().splitlines() == [f"Error: cannot write {out}: {why}"]
        assert (out.read_bytes() if out.exists() else None) == before


def test_out_may_not_be_a_track_or_database_file_however_it_is_spelled(tmp_path, monkeypatch):
    db = make_db(tmp_path, [{"name": "a", "vector": axis(0), "duration": 60.0}])
    db.tracks[0]["file_path"] = "processed_music/a.wav"
    paths = LibraryPaths.at(tmp_path)
    monkeypatch.chdir(tmp_path / "processed_music")
    for out in (Path("a.wav"), tmp_path / "processed_music" / ".." / "processed_music" / "a.wav",
                tmp_path / "music_database_metadata.json"):
        assert recommend_cli.check_outside_library(db, paths, [tmp_path / "trip.mp4", out]) == \
            f"cannot write {out}: it is a file of the music library in {tmp_path}"
    assert recommend_cli.check_outside_library(db, paths, [tmp_path / "b.wav", tmp_path.parent / "a.wav"]) is None


@pytest.mark.parametrize("args", [
    ["a.jpg", "--soundtrack"],  # too few photos
    [*(f"{i}.jpg" for i in range(MAX_PHOTOS + 1)), "--soundtrack"],  # too many
    ["a.jpg", "b.jpg", "--soundtrack", "--out", "trip.avi"],  # an extension nothing writes
    ["a.jpg", "b.jpg", "--soundtrack", "--out", "trip"],
    ["a.jpg", "b.jpg", "--soundtrack", "--seconds-per-photo", "4", "--total-seconds", "60"],
    ["a.jpg", "b.jpg", "--soundtrack", "--seconds-per-photo", "0"],
    ["a.jpg", "b.jpg", "--soundtrack", "--total-seconds", "nan"],
    ["a.jpg", "b.jpg", "--soundtrack", "--total-seconds", "-3"],
    ["a.jpg", "b.jpg", "--soundtrack", "--total-seconds", "inf"],
    ["a.jpg", "b.jpg", "--soundtrack", "--like", "x.mp3"],
    ["a.jpg", "b.jpg", "--soundtrack", "--play"],
    ["a.jpg", "b.jpg", "--out", "trip.mp4"],  # --out without --soundtrack
    ["a.jpg", "--seconds-per-photo", "3"],
])
def test_cli_soundtrack_usage_errors_exit_2(args, call_cli):
    done = call_cli(recommend_cli.main, *args)
    assert done.returncode == 2 and "usage:" in done.stderr and done.stdout == ""
    assert done.stderr.strip().splitlines()[-1].startswith("recommend.py: error: ")


@pytest.mark.parametrize(("args", "why"), [
    (["--seconds-per-photo", "1e9"], (f"argument --seconds-per-photo: 1e+09 s is more than the limit of "
                                      f"{MAX_SECONDS_PER_PHOTO:g} s")),
    (["--total-seconds", "1e9"], f"argument --total-seconds: 1e+09 s is more than the limit of {MAX_TOTAL_S:g} s"),
    (["--seconds-per-photo", "59"], (f"{MAX_PHOTOS} photos of 59 s would last 11800 s; a soundtrack lasts at most "
                                     f"{MAX_TOTAL_S:g} s (30 minutes)")),
])
def test_cli_lengths_beyond_the_limits_are_usage_errors_before_any_model_work(args, why, tmp_path, call_cli):
    """An impossible length once ran for minutes, its memory growing: now a usage error naming the limit, before
    the library or a model is opened (neither model exists here, nor do the photos)."""
    out = tmp_path / "out"
    out.mkdir()
    done = call_cli(recommend_cli.main, *(f"{i}.jpg" for i in range(MAX_PHOTOS)), "--soundtrack", *args,
                    "--out", out / "trip.mp4", "--blip-model", tmp_path / "no-blip",
                    "--clap-model", tmp_path / "no-clap")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines()[-1] == f"recommend.py: error: {why}"
    assert not list(out.iterdir())


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
def test_cli_stopped_while_rendering_leaves_no_temporary_file(library_copy, checkpoints, photos, tmp_path, stop):
    """A stop request (a service manager's SIGTERM as much as Ctrl-C's SIGINT) while the --out files are being
    written: one line, exit 128 + the signal's number, and nothing beside the outputs (SIGTERM once left 31 MB of
    .tmp files there)."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "out"
    out.mkdir()
    album = [photos[name] for name in ("coffee.png", "chelsea.png", "rocket.jpg", "astronaut.png")]
    command = [sys.executable, str(Path(recommend_cli.__file__)), *map(str, album), "--soundtrack",
               "--seconds-per-photo", "60", "--out", str(out / "trip.mp4"), "--out", str(out / "trip.wav"),
               "--blip-model", checkpoints["blip"], "--clap-model", checkpoints["clap"]]
    with open(tmp_path / "stderr.txt", "wb") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 300
        while not list(out.glob(".trip.mp4.*.tmp")):  # write_outputs has begun: its temporary files exist
            assert process.poll() is None, (tmp_path / "stderr.txt").read_text()
            assert time.monotonic() < deadline, "the render never started"
            time.sleep(0.05)
        process.send_signal(getattr(signal, stop))
        code = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    lines = (tmp_path / "stderr.txt").read_text().strip().splitlines()
    assert code == 128 + getattr(signal, stop), lines
    assert lines[-1] == "Interrupted: no --out file was written.", lines
    assert "Traceback" not in "\n".join(lines)
    assert list(out.iterdir()) == []
