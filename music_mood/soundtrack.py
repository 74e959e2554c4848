"""A soundtrack for a set of photos: describing them, splitting them into scenes (scenes.py), choosing the track
and the stretch of it under each scene, and replacing one scene's track; the result is a plan.Plan, rendered by
music_mood.render into a playlist, a mixed audio file and a slideshow video."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

from music_mood.database import REBUILD, Database, DatabaseError, EmptyLibraryError, check_dimension
from music_mood.describe import MAX_CAPTION_TOKENS, describe_pixels, vision_batch_size
from music_mood.images import ImageError, open_image
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
from music_mood.remote import is_server_track
from music_mood.scenes import SCENE_MIN_DROP, scene_min_photos, shared_words, split_scenes
from music_mood.search import (
    NO_FILTERS,
    Filters,
    best_segment_start,
    missing_files_error,
    rank_results,
    shared_mood_words,
)

# The plan's and the scenes' names, which callers have always imported from here.
__all__ = ["DEFAULT_SECONDS_PER_PHOTO", "MAX_PHOTOS", "MAX_SECONDS_PER_PHOTO", "MAX_TOTAL_S", "MIN_PHOTOS",
           "OUTPUT_EXTENSIONS", "NoOtherTrackError", "NoReadablePhotosError", "Piece", "Plan", "PlanPhoto", "Scene",
           "arrange_soundtrack", "check_can_plan", "check_lengths", "duration_seconds", "named_skipped_photo",
           "plan_soundtrack", "read_photos", "replace_scene_track", "scene_min_photos", "scene_pieces",
           "shared_words", "split_scenes", "track_duration", "track_stretch"]


# ------------------------------------------------------------------------------------------- tracks


def track_duration(track: dict) -> float:
    """A record's length in seconds; 0 when the database does not know it (a seed-format file)."""
    return duration_seconds(track.get("duration_s"))


def duration_seconds(value) -> float:
    """A stored `duration_s` value as seconds; 0 when it is missing or not a length."""
    try:
        duration = float(value or 0)
    except (TypeError, ValueError):
        return 0.0
    return duration if math.isfinite(duration) and duration > 0 else 0.0


def check_can_plan(db: Database, filters: Filters = NO_FILTERS) -> None:
    """Raise EmptyLibraryError when `db` has no track or none `filters` keep (Filters.check), DatabaseError when it
    records no track's length (a soundtrack cuts tracks to length). Needs no model: the CLI runs it before loading
    any."""
    filters.check(db)
    if not any(duration_seconds(d) for d in db.column("duration_s")):
        raise DatabaseError(f"{db.root} records no track lengths (an older database format); {REBUILD}")


def track_stretch(duration_s: float, best_start_s: float, length_s: float) -> tuple[float, float]:
    """[start, end) seconds of a track `duration_s` long to play for `length_s`: from its best moment when enough
    of the track follows it, else as much earlier as needed to end with the track; the whole track when it is
    not longer than `length_s` (the caller continues with another). Never loops."""
    if duration_s <= length_s:
        return 0.0, duration_s
    start = max(0.0, min(best_start_s, duration_s - length_s))
    return start, min(start + length_s, duration_s)


class _TrackChooser:
    """Picks each piece's track: the best-ranked usable track (file present, length known, filters kept) that
    this soundtrack has not used yet. When the library has none left, tracks repeat (`repeated` is set): first
    the best not yet in this scene and not the one just before, then the best but the one just before, then the
    best."""

    def __init__(self, db: Database, filters: Filters = NO_FILTERS):
        self.db, self.filters = db, filters
        self.unusable = {row for row, d in enumerate(db.column("duration_s")) if not duration_seconds(d)}
        self.used: set[int] = set()
        self.previous: set[int] = set()  # the row of the piece just before, if any
        self.repeated = False

    def pick(self, vector: np.ndarray, in_scene: set[int]) -> tuple[int, float]:
        for tries, avoid in enumerate((self.used, in_scene | self.previous, self.previous, set())):
            ranked, missing = rank_results(self.db, vector, 1, self.filters, max_per_artist=0,
                                           exclude=self.unusable | avoid)
            if ranked:
                row, score = ranked[0]
                self.repeated |= tries > 0
                self.used.add(row)
                self.previous = {row}
                return row, score
        if missing:
            raise missing_files_error(self.db, missing)
        raise EmptyLibraryError(f"no track the filters keep has a known length; {REBUILD}")


def server_song(track: dict) -> dict:
    """A Piece's source and song_id for a server's song (what rendering downloads it by) and its track's id (what a
    served plan names it by); none for a file."""
    if not is_server_track(track):
        return {}
    return {"source": str(track["source"]), "song_id": str(track["song_id"]), "track_id": str(track["id"])}


def scene_pieces(db: Database, chooser: _TrackChooser, vector: np.ndarray, start_s: float,
                 end_s: float) -> list[tuple[int, Piece]]:
    """(row, piece) of each piece under one scene [start_s, end_s): its best track from its best moment
    (track_stretch); where that track ends before the scene does, the next-best track continues, and so on.
    They abut exactly and the last ends at end_s."""
    pieces: list[Piece] = []
    at, rows = start_s, []
    while True:
        row, score = chooser.pick(vector, set(rows))
        rows.append(row)
        track = db.tracks[row]
        best = best_segment_start(db, row, vector)
        track_start, track_end = track_stretch(track_duration(track), best or 0.0, end_s - at)
        last = at + (track_end - track_start) >= end_s or track_end - track_start >= end_s - at
        pieces.append(Piece(file_path=str(track["file_path"]), title=str(track.get("title", "")),
                            artist=str(track.get("artist", "")), score=round(score, 6), track_start_s=track_start,
                            track_end_s=track_end, start_s=at, end_s=end_s if last else at + (track_end - track_start),
                            **server_song(track)))
        if last:
            return list(zip(rows, pieces))
        at = pieces[-1].end_s


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
                    scene_min_drop: float = SCENE_MIN_DROP) -> Plan:
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
    return arrange_soundtrack(db, queries, seconds_per_photo, total_s, text, filters, skipped, scene_min_drop)


def arrange_soundtrack(db: Database, photos: list[tuple[str, Query]],
                       seconds_per_photo: float = DEFAULT_SECONDS_PER_PHOTO, total_s: float | None = None,
                       text: str = "", filters: Filters = NO_FILTERS, skipped_photos=(),
                       scene_min_drop: float = SCENE_MIN_DROP) -> Plan:
    """The plan for described photos ((path, Query) in the order shown); no model is used.

    - Time: photo i is on screen [i, i + 1) x total / n, where total is `total_s` or n x `seconds_per_photo`.
    - Scenes: split_scenes over the photos' unit query vectors, with scene_min_photos(seconds per photo) and
      `scene_min_drop`.
    - A scene's query: its photos' vectors averaged and normalised. Its music: the best-ranked track of the
      library (rank_results with `filters`, which the plan stores; missing files and tracks of unknown length
      skipped) that this soundtrack has not used yet, scenes taken in order, from track_stretch of its best moment
      (best_segment_start); a track that ends before its scene does is continued by the next-best unused one.
      With too few usable tracks, tracks repeat and plan.tracks_repeat is set.
    - Why: the scene's mood words (shared_words of its photos'), its photos' query texts, and which of its mood
      words the first track is tagged with.
    """
    n = len(photos)
    if n == 0:
        raise NoReadablePhotosError("no photo to make a soundtrack for")
    total = float(total_s) if total_s is not None else n * float(seconds_per_photo)
    seconds = total / n
    bounds = [i * total / n for i in range(n)] + [total]  # photo i: [bounds[i], bounds[i + 1])
    plan_photos = [PlanPhoto(path=str(path), name=Path(path).name, caption=query.caption,
                             mood_words=list(query.mood_words), start_s=bounds[i], end_s=bounds[i + 1])
                   for i, (path, query) in enumerate(photos)]
    vectors = np.stack([np.asarray(query.vector, dtype=np.float32) for _, query in photos])
    chooser = _TrackChooser(db, filters)
    scenes = []
    for index, rows in enumerate(split_scenes(vectors, scene_min_photos(seconds), scene_min_drop)):
        mean = vectors[rows.start:rows.stop].astype(np.float64).mean(axis=0)
        vector = (mean / (np.linalg.norm(mean) or 1.0)).astype(np.float32)
        start_s, end_s = bounds[rows.start], bounds[rows.stop]
        mood_words = shared_words([photos[i][1].mood_words for i in rows])
        (first, *_), pieces = zip(*scene_pieces(db, chooser, vector, start_s, end_s))
        scenes.append(Scene(index=index, photos=list(rows), start_s=start_s, end_s=end_s, mood_words=mood_words,
                            query_text=" | ".join(dict.fromkeys(photos[i][1].query_text for i in rows)),
                            vector=[float(x) for x in vector], pieces=list(pieces),
                            shared_mood_words=shared_mood_words(db.tracks[first], mood_words)))
    return Plan(library_root=str(db.root), seconds_per_photo=seconds, total_s=total, text=text, photos=plan_photos,
                scenes=scenes, tracks_repeat=chooser.repeated, skipped_photos=[dict(s) for s in skipped_photos],
                filters=filters)


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
    chooser = _TrackChooser(db, filters)
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
    (first, *_), pieces = zip(*scene_pieces(db, chooser, vector, scene.start_s, scene.end_s))
    new = copy.deepcopy(plan)
    new.scenes[scene_index] = Scene(index=scene.index, photos=list(scene.photos), start_s=scene.start_s,
                                    end_s=scene.end_s, mood_words=list(scene.mood_words),
                                    query_text=scene.query_text, vector=list(scene.vector), pieces=list(pieces),
                                    shared_mood_words=shared_mood_words(db.tracks[first], scene.mood_words))
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
