"""A soundtrack for a set of photos: describing them, splitting them into scenes (scenes.py), choosing the track
and the stretch of it under each scene, and replacing one scene's track; the result is a plan.Plan, rendered by
music_mood.render into a playlist, a mixed audio file and a slideshow video."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from music_mood.database import Database, check_dimension
from music_mood.describe import MAX_CAPTION_TOKENS, describe_pixels, vision_batch_size
from music_mood.images import ImageError, open_image
from music_mood.pieces import (
    TrackChooser,
    check_can_plan,
    duration_seconds,
    scene_pieces,
    track_duration,
    track_stretch,
)
from music_mood.plan import (
    DEFAULT_SECONDS_PER_PHOTO,
    MAX_PHOTOS,
    MAX_SECONDS_PER_PHOTO,
    MAX_TOTAL_S,
    MIN_PHOTOS,
    OUTPUT_EXTENSIONS,
    NoReadablePhotosError,
    Piece,
    Plan,
    PlanPhoto,
    Scene,
    check_lengths,
    named_skipped_photo,
)
from music_mood.query import Query, compose_query_text, embed_text
from music_mood.scenes import SCENE_MIN_DROP, scene_min_photos, shared_words, split_scenes
from music_mood.search import (
    NO_FILTERS,
    Filters,
    rank_results,
    shared_mood_words,
)
from music_mood.timing import set_crossfades, synced_scene

# The plan's and the scenes' names, which callers have always imported from here.
__all__ = ["DEFAULT_SECONDS_PER_PHOTO", "MAX_PHOTOS", "MAX_SECONDS_PER_PHOTO", "MAX_TOTAL_S", "MIN_PHOTOS",
           "OUTPUT_EXTENSIONS", "NoOtherTrackError", "NoReadablePhotosError", "Piece", "Plan", "PlanPhoto", "Scene",
           "arrange_soundtrack", "check_can_plan", "check_lengths", "duration_seconds", "named_skipped_photo",
           "plan_soundtrack", "read_photos", "replace_scene_track", "scene_min_photos", "scene_pieces",
           "shared_words", "split_scenes", "track_duration", "track_stretch"]


# ---------------------------------------------------------------------------------------------- planning

def read_photos(blip, photos, progress: bool = True, max_caption_tokens: int = MAX_CAPTION_TOKENS,
                min_caption_tokens: int = 0) -> tuple[list[tuple[str, str, list[str]]], list[dict]]:
    """Describe each photo once, in order: ([(path, caption, mood words)], [{"path", "error"}] of those that
    cannot be read). The vision passes of vision_batch_size(blip) photos at a time run as one batch
    (describe_pixels); only their pixel values are held meanwhile. Progress is a tqdm bar on stderr."""
    from tqdm import tqdm

    described, skipped, pending = [], [], []  # pending: (path, pixel values) not yet described
    bar = tqdm(total=len(photos), desc="Describing photos", unit="photo", file=sys.stderr,
               disable=not progress or None)

    def describe_pending():
        answers = describe_pixels(blip, [pixels for _, pixels in pending], max_caption_tokens, min_caption_tokens)
        described.extend((path, caption, mood_words) for (path, _), (caption, mood_words) in zip(pending, answers))
        bar.update(len(pending))
        pending.clear()

    batch = vision_batch_size(blip)
    with bar:
        for photo in photos:
            try:
                image = open_image(photo)
            except ImageError as e:
                skipped.append({"path": str(photo), "error": str(e)})
                bar.update(1)
                continue
            pending.append((str(photo), blip.runtime.pixel_values(image)))
            if len(pending) == batch:
                describe_pending()
        if pending:
            describe_pending()
    return described, skipped


def plan_soundtrack(blip, clap, db: Database, photos, seconds_per_photo: float = DEFAULT_SECONDS_PER_PHOTO,
                    total_s: float | None = None, text: str = "", filters: Filters = NO_FILTERS,
                    progress: bool = True, max_caption_tokens: int = MAX_CAPTION_TOKENS, min_caption_tokens: int = 0,
                    scene_min_drop: float = SCENE_MIN_DROP, beat_sync: bool = True) -> Plan:
    """A soundtrack of `db`'s tracks for `photos` (paths, shown in this order), each on screen
    `seconds_per_photo`, or `total_s` spread evenly over the photos that can be read.

    Each photo is described once (caption and mood words); its query is compose_query_text(caption, mood words,
    `text`) embedded by CLAP, as recommend() makes it. arrange_soundtrack does the rest (`scene_min_drop`: see
    split_scenes). A photo that cannot be
    read is left out and named in plan.skipped_photos. `filters` keep tracks as in recommend(); the plan stores them.
    Raises ValueError for fewer than MIN_PHOTOS or more than MAX_PHOTOS photos or a length that is not positive,
    EmptyLibraryError / DatabaseError when the library cannot give a soundtrack (checked before any model work,
    see check_can_plan), NoReadablePhotosError when no photo can be read.
    """
    photos = list(photos)
    check_lengths(len(photos), seconds_per_photo, total_s)
    check_can_plan(db, filters)
    described, skipped = read_photos(blip, photos, progress, max_caption_tokens, min_caption_tokens)
    if not described:
        first = skipped[0]["error"]
        more = f", and {len(skipped) - 1} more" if len(skipped) > 1 else ""
        raise NoReadablePhotosError(f"none of the {len(photos)} photos can be read ({first}{more})")
    texts = [compose_query_text(caption, mood_words, text) for _, caption, mood_words in described]
    # One CLAP pass per distinct text (a repeated photo repeats its text), each alone as recommend() embeds it,
    # so a photo's vector is the one its own recommendation ranks by.
    vectors = {t: embed_text(clap, [t])[0] for t in dict.fromkeys(texts)}
    check_dimension(db.dim, next(iter(vectors.values())).shape[0])
    queries = [(path, Query(caption=caption, mood_words=list(mood_words), query_text=t, vector=vectors[t]))
               for (path, caption, mood_words), t in zip(described, texts)]
    return arrange_soundtrack(db, queries, seconds_per_photo, total_s, text, filters, skipped, scene_min_drop,
                              beat_sync)


def arrange_soundtrack(db: Database, photos: list[tuple[str, Query]],
                       seconds_per_photo: float = DEFAULT_SECONDS_PER_PHOTO, total_s: float | None = None,
                       text: str = "", filters: Filters = NO_FILTERS, skipped_photos=(),
                       scene_min_drop: float = SCENE_MIN_DROP, beat_sync: bool = True) -> Plan:
    """The plan for described photos ((path, Query) in the order shown); no model is used.

    - Time: by the clock, photo i is on screen [i, i + 1) x total / n, where total is `total_s` or n x
      `seconds_per_photo`. With `beat_sync` (the default), timing.py moves each change onto the beat of the music
      playing then (a scene change onto a downbeat), staying within half a bar of the clock and ending within a
      beat of the total; tracks without a steady beat keep the clock.
    - Scenes: split_scenes over the photos' unit query vectors, with scene_min_photos(seconds per photo) and
      `scene_min_drop`.
    - A scene's query: its photos' vectors averaged and normalised. Its music: the best-ranked track of the
      library (rank_results with `filters`, which the plan stores; missing files and tracks of unknown length
      skipped) that this soundtrack has not used yet, scenes taken in order, from track_stretch of its best moment
      (best_segment_start; with beat sync, from the downbeat before it); a track that ends before its scene does
      is continued by the next-best unused one. With too few usable tracks, tracks repeat and plan.tracks_repeat
      is set.
    - Why: the scene's mood words (shared_words of its photos'), its photos' query texts, and which of its mood
      words the first track is tagged with.
    """
    n = len(photos)
    if n == 0:
        raise NoReadablePhotosError("no photo to make a soundtrack for")
    total = float(total_s) if total_s is not None else n * float(seconds_per_photo)
    seconds = total / n
    bounds = [i * total / n for i in range(n)] + [total]  # photo i by the clock: [bounds[i], bounds[i + 1])
    vectors = np.stack([np.asarray(query.vector, dtype=np.float32) for _, query in photos])
    chooser = TrackChooser(db, filters)
    scenes, starts, at, fade_out = [], [], 0.0, None
    split = split_scenes(vectors, scene_min_photos(seconds), scene_min_drop)
    for index, rows in enumerate(split):
        mean = vectors[rows.start:rows.stop].astype(np.float64).mean(axis=0)
        vector = (mean / (np.linalg.norm(mean) or 1.0)).astype(np.float32)
        if beat_sync:
            cut = synced_scene(db, chooser, vector, at, bounds[rows.stop], bounds[rows.start:rows.stop],
                               final=index == len(split) - 1)
            placed, end_s, fade_out = cut.pieces, cut.end_s, cut.fade_out_s
            starts += cut.photo_starts
        else:
            placed, end_s = scene_pieces(db, chooser, vector, at, bounds[rows.stop]), bounds[rows.stop]
            starts += bounds[rows.start:rows.stop]
        mood_words = shared_words([photos[i][1].mood_words for i in rows])
        (first, *_), pieces = zip(*placed)
        scenes.append(Scene(index=index, photos=list(rows), start_s=at, end_s=end_s, mood_words=mood_words,
                            query_text=" | ".join(dict.fromkeys(photos[i][1].query_text for i in rows)),
                            vector=[float(x) for x in vector], pieces=list(pieces),
                            shared_mood_words=shared_mood_words(db.tracks[first], mood_words)))
        at = end_s
    if beat_sync:
        set_crossfades([piece for scene in scenes for piece in scene.pieces])
    plan_photos = [PlanPhoto(path=str(path), name=Path(path).name, caption=query.caption,
                             mood_words=list(query.mood_words), start_s=start, end_s=end)
                   for (path, query), start, end in zip(photos, starts, [*starts[1:], at])]
    return Plan(library_root=str(db.root), seconds_per_photo=seconds, total_s=at, text=text, photos=plan_photos,
                scenes=scenes, tracks_repeat=chooser.repeated, skipped_photos=[dict(s) for s in skipped_photos],
                filters=filters, beat_sync=beat_sync, fade_out_s=fade_out)


# ---------------------------------------------------------------------------------------------- one scene again


class NoOtherTrackError(LookupError):
    """A scene's track cannot be replaced: no usable track ranks below it for the scene that the rest of the plan
    does not already play; the message says which scene and why."""


def replace_scene_track(db: Database, plan: Plan, scene_index: int) -> Plan:
    """`plan` with scene `scene_index`'s music replaced by the next-best track for that scene; no model is used.

    The scene's query is its stored vector (Scene.vector). The ranking is arrange_soundtrack's (rank_results
    with plan.filters, those the plan was made with; missing files and tracks of unknown length skipped).
    "Next-best" is the best track that ranks below the scene's current first track (ties broken by row, as the
    ranking breaks them) and that no other scene plays: pressing again walks down the ranking. A current track
    no longer in the library (or no longer kept by the filters) gives the best track no other scene plays. The
    new track plays from its best moment (track_stretch); one shorter than the scene is continued as
    arrange_soundtrack continues it, and only there may a track repeat (tracks_repeat says so).

    Every other scene, the photos and the timing are kept as they are; the result is a new Plan (`plan` is not
    changed). Raises IndexError for a scene the plan does not have, ValueError for a plan made from another
    library, EmptyLibraryError when the library or the filters leave no track, NoOtherTrackError when no track
    is left to replace this one with.
    """
    import copy

    if not 0 <= scene_index < len(plan.scenes):
        raise IndexError(f"the soundtrack has {len(plan.scenes)} scene(s), numbered 0 to {len(plan.scenes) - 1}; "
                         f"there is no scene {scene_index}")
    if Path(plan.library_root) != Path(db.root):
        raise ValueError(f"the plan was made from the library in {plan.library_root}, not {db.root}")
    filters = plan.filters
    check_can_plan(db, filters)
    scene = plan.scenes[scene_index]
    elsewhere = {db.row_of_file(piece.file_path) for other in plan.scenes if other is not scene
                 for piece in other.pieces} - {None}
    vector = np.asarray(scene.vector, dtype=np.float32)
    chooser = TrackChooser(db, filters)
    chooser.used = elsewhere | _ranked_down_to(db, vector, db.row_of_file(scene.pieces[0].file_path) if scene.pieces
                                               else None, chooser.unusable, filters)
    before = plan.scenes[scene_index - 1].pieces if scene_index > 0 else []
    chooser.previous = {db.row_of_file(before[-1].file_path)} - {None} if before else set()
    ranked, _ = rank_results(db, vector, 1, filters, max_per_artist=0, exclude=chooser.unusable | chooser.used)
    if not ranked:
        current = scene.pieces[0].title or scene.pieces[0].file_path if scene.pieces else "its track"
        if not elsewhere:  # no other scene holds a track back: the ranking itself has run out
            raise NoOtherTrackError(f"scene {scene_index + 1} has no next-best track: no other track of the library "
                                    f"matches the filters after “{current}”")
        raise NoOtherTrackError(f"scene {scene_index + 1} has no next-best track: every track the library (and the "
                                f"filters) offer after “{current}” for this scene plays in another scene already")
    new = copy.deepcopy(plan)
    if plan.beat_sync:  # the scene keeps its start and end; its photos move onto the new track's beats
        ideal = [plan.photos[i].start_s for i in scene.photos]
        cut = synced_scene(db, chooser, vector, scene.start_s, scene.end_s, ideal, final=False,
                           fixed_end_s=scene.end_s)
        placed = cut.pieces
        for i, start, end in zip(scene.photos, cut.photo_starts, [*cut.photo_starts[1:], scene.end_s]):
            new.photos[i].start_s, new.photos[i].end_s = start, end
    else:
        placed = scene_pieces(db, chooser, vector, scene.start_s, scene.end_s)
    (first, *_), pieces = zip(*placed)
    new.scenes[scene_index] = Scene(index=scene.index, photos=list(scene.photos), start_s=scene.start_s,
                                    end_s=scene.end_s, mood_words=list(scene.mood_words),
                                    query_text=scene.query_text, vector=list(scene.vector), pieces=list(pieces),
                                    shared_mood_words=shared_mood_words(db.tracks[first], scene.mood_words))
    if plan.beat_sync:
        set_crossfades([piece for other in new.scenes for piece in other.pieces])
    played = [piece.file_path for other in new.scenes for piece in other.pieces]
    new.tracks_repeat = len(played) != len(set(played))
    return new


def _ranked_down_to(db: Database, vector: np.ndarray, row: int | None, unusable: set[int],
                    filters: Filters = NO_FILTERS) -> set[int]:
    """The rows that rank_results ranks for `vector` from the first down to `row` included: the tracks not below
    it. Empty when `row` is None or not ranked at all (gone from the library, or left out by the filters)."""
    if row is None or row in unusable:
        return set()
    want = 16
    while True:
        ranked, _ = rank_results(db, vector, want, filters, max_per_artist=0, exclude=unusable)
        found = [r for r, _ in ranked]
        if row in found:
            return set(found[:found.index(row) + 1])
        if len(ranked) < want:
            return set()
        want *= 2
