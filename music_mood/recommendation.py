"""The one recommend() that the CLI (recommend.py) and the web app (app.py) share: a photo and/or words, or a
track of the library, → the ranked tracks of the library and why."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from music_mood.database import Database, EmptyLibraryError, check_dimension, find_track
from music_mood.query import image_to_query
from music_mood.search import (
    DEFAULT_MAX_PER_ARTIST,
    NO_FILTERS,
    Filters,
    best_segment_start,
    missing_files_error,
    rank_results,
    shared_mood_words,
)
from music_mood.tags import auto_tag_words


class NoQueryError(ValueError):
    """Neither a photo nor words to search by."""


@dataclass
class Track:
    """One ranked result; best_segment_start_s is where in the track the query matches best; shared_mood_words are
    the query's mood words that are among the track's mood/genre tags; bpm is its tempo (None: no beat found, or
    not read yet)."""

    rank: int
    title: str
    artist: str
    mood: str
    genre: str
    file_path: str
    score: float
    best_segment_start_s: float | None
    shared_mood_words: list[str] = field(default_factory=list)
    # The automatic tags (music_mood.tags) made from the track's vector, {"mood": [...], "genre": [...]}, best
    # first; mood and genre above are the user's own (folder, file tags) and win where both exist.
    auto_tags: dict = field(default_factory=dict)
    bpm: float | None = None
    id: str = ""  # the record's id: how the web app serves the track (/track/<id>) and --like names it


@dataclass
class Recommendation:
    """Everything a user sees: what the photo was read as, the exact text embedded, and the ranked tracks.

    For "more like this" (recommend(like=...)) caption and mood_words are empty and query_text says which track.

    skipped_missing: file_path of each track that ranked among these results but whose file is gone, best first.
    """

    caption: str
    mood_words: list[str]
    query_text: str
    results: list[Track] = field(default_factory=list)
    skipped_missing: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def recommend(blip, clap, db: Database, image=None, text: str = "", topk: int = 10,
              filters: Filters = NO_FILTERS, max_per_artist: int = DEFAULT_MAX_PER_ARTIST, diversity: float = 0.0,
              like: str | None = None, **caption_length) -> Recommendation:
    """Recommend tracks of `db` for an image and/or a text.

    `blip` and `clap` are models from models.load_blip / load_clap_text (blip may be None for text alone);
    `image` is a path, bytes, numpy array or PIL image; only the tracks `filters` keep (mood, genre, tempo) are
    recommended.
    Tracks whose file is missing are left out (the next ones take their places) and named in skipped_missing.
    At most `max_per_artist` tracks of one artist (and of one album) are listed (0: no cap); `diversity` in [0, 1]
    re-ranks by MMR over the stored track vectors (0: the pure ranking). `like` (a track's id or file path) makes
    that track's stored vector the query instead of image/text (no model is used; the track itself is left out).
    Raises UnknownTrackError for a `like` that is no track, ValueError for a bad topk/max_per_artist/diversity,
    ImageError for an unreadable image, NoQueryError when there is neither image nor text, and
    EmptyLibraryError when nothing can be recommended (an empty library, filters that keep no track, checked
    before any model work by filters.check, or every matching file missing). `caption_length`: max_caption_tokens /
    min_caption_tokens of query.image_to_query.
    """
    if topk < 1:
        raise ValueError("topk must be at least 1")
    if max_per_artist < 0:
        raise ValueError("max_per_artist must be 0 (no cap) or more")
    if not 0 <= diversity <= 1:
        raise ValueError("diversity must be between 0 and 1")
    filters.check(db)
    if like is not None:
        row = find_track(db, like)
        caption, mood_words, exclude = "", [], {row}
        query_text, vector = f"more like {db.tracks[row]['file_path']}", db.vectors[row]
    else:
        if image is None and not (text or "").strip():
            raise NoQueryError("give a photo, some words, or both")
        query = image_to_query(blip, clap, image=image, text=text, **caption_length)
        check_dimension(db.dim, query.vector.shape[0])
        caption, mood_words, query_text, vector = query.caption, query.mood_words, query.query_text, query.vector
        exclude = set()
    ranked, missing = rank_results(db, vector, topk, filters, max_per_artist, diversity, exclude)
    if not ranked and not missing:  # only "more like this" can rank nothing: its track was the only match
        raise EmptyLibraryError("no other track in the library matches the filters")
    if not ranked:
        raise missing_files_error(db, missing)
    results = []
    for rank, (row, score) in enumerate(ranked, 1):
        t = db.tracks[row]
        results.append(Track(rank=rank, title=str(t.get("title", "")), artist=str(t.get("artist", "")),
                             mood=str(t.get("mood", "")), genre=str(t.get("genre", "")),
                             file_path=str(t["file_path"]), score=round(score, 6),
                             best_segment_start_s=best_segment_start(db, row, vector),
                             shared_mood_words=shared_mood_words(t, mood_words),
                             auto_tags={kind: auto_tag_words(t, kind) for kind in ("mood", "genre")},
                             bpm=t.get("bpm"), id=str(t.get("id", ""))))
    return Recommendation(caption=caption, mood_words=list(mood_words), query_text=query_text,
                          results=results, skipped_missing=[str(db.tracks[row]["file_path"]) for row in missing])
