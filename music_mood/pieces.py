"""The music under a scene: which track (the best-ranked one the soundtrack has not used yet) and which stretch of
it (from its best moment), continued by the next-best track where one ends before the scene does. soundtrack.py
arranges a plan from these; timing.py cuts them on the beat."""
from __future__ import annotations

import math

import numpy as np

from music_mood.database import REBUILD, Database, DatabaseError, EmptyLibraryError
from music_mood.plan import Piece
from music_mood.remote import is_server_track
from music_mood.search import NO_FILTERS, Filters, best_segment_start, missing_files_error, rank_results


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


class TrackChooser:
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


def new_piece(track: dict, score: float, track_start_s: float, start_s: float, end_s: float, **beats) -> Piece:
    """The piece that plays `track` from `track_start_s` at [start_s, end_s) of the soundtrack (and, for a
    beat-synced plan, its tempo and beats: timing.py)."""
    return Piece(file_path=str(track["file_path"]), title=str(track.get("title", "")),
                 artist=str(track.get("artist", "")), score=round(score, 6), track_start_s=track_start_s,
                 track_end_s=track_start_s + (end_s - start_s), start_s=start_s, end_s=end_s, **server_song(track),
                 **beats)


def scene_pieces(db: Database, chooser: TrackChooser, vector: np.ndarray, start_s: float,
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
        pieces.append(new_piece(track, score, track_start, at, end_s if last else at + (track_end - track_start)))
        if last:
            return list(zip(rows, pieces))
        at = pieces[-1].end_s
