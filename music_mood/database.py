"""The loaded library in memory: Database (the vectors, a track store, the windows), the errors about it, the checks a
caller makes before using it, and finding a track in it. Its files, loading and committing: library.py."""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from music_mood.index import SEARCH_INDEX_MIN_TRACKS, load_search_index
from music_mood.rows import is_lazy, stack_rows, take_ranges, take_rows
from music_mood.tracks import TrackList, TrackStore

NORM_TOLERANCE = 1e-3  # every stored vector is of length 1 within this
REBUILD = "rebuild it with: python music_to_vector.py --rebuild"
EMPTY_LIBRARY = ("the music library is empty: put audio files in new_music/ and run python music_to_vector.py, "
                 "or import the bundled tracks with python music_to_vector.py --sample")


class DatabaseError(RuntimeError):
    """The database files are missing pieces, corrupt, or were made by another model; the message says what to do."""


class EmptyLibraryError(DatabaseError):
    """There is nothing to recommend from (no tracks, or none left after the filters)."""


class UnknownTrackError(LookupError):
    """A path or id that names no track of the library."""


@dataclass
class Database:
    """The loaded library: vectors float32 (N, D), tracks (N records in a tracks.TrackStore: a list given or
    assigned is kept as a TrackList), segments float32 (S, D) or None. Ask all records at once through the store's
    questions (column, rows_with, rows_tagged...), which a catalogue's table answers by a query, rather than by
    walking `tracks`."""

    vectors: np.ndarray
    tracks: TrackStore
    segments: np.ndarray | None = None
    clap_model: str | None = None
    root: Path = field(default_factory=Path)
    window_s: float = 10.0  # length of one segment: segment j starts at j * window_s, but a track's last one
    # starts at its record's last_window_start_s (see search.best_segment_start)
    vectors_path: Path | None = None  # where `vectors` was loaded from; the search index is cached next to it
    index_min_tracks: int = SEARCH_INDEX_MIN_TRACKS  # from this many tracks on, search_index() gives an index
    table: bool = False  # the records are committed as a track table (set on load; compose and edits carry it)
    _index: object = field(default=None, repr=False, compare=False)
    _tag_values: dict = field(default_factory=dict, repr=False, compare=False)
    _bpm: object = field(default=None, repr=False, compare=False)
    _lock: object = field(default_factory=threading.Lock, repr=False, compare=False)

    def __setattr__(self, name: str, value) -> None:
        if name == "tracks" and not isinstance(value, TrackStore):
            value = TrackList(value)  # plain records, in memory: the list store
        super().__setattr__(name, value)

    def __len__(self) -> int:
        return len(self.tracks)

    def search_index(self):
        """The faiss index over `vectors` when the library has index_min_tracks or more, else None.

        Loaded from its cache file (or built, then cached) on first use, once per Database.
        """
        if len(self) < self.index_min_tracks:
            return None
        with self._lock:
            if self._index is None:
                self._index = load_search_index(self.vectors, self.vectors_path)
        return self._index

    def rows_tagged(self, key: str, wanted) -> np.ndarray:
        """The rows (int64, ascending) whose own tag of `key` (mood, genre: a folder mood, a file genre) or one of
        whose automatic tags of that kind, lower-cased, is in `wanted` (lower-case words)."""
        return np.array(self.tracks.rows_tagged(key, sorted(wanted)), dtype=np.int64)

    def tag_values(self, key: str) -> list[str]:
        """The distinct non-empty values of one tag (mood, genre), the tracks' own and automatic, sorted
        case-insensitively; cached."""
        with self._lock:
            if key not in self._tag_values:
                self._tag_values[key] = sorted(self.tracks.tag_values(key), key=str.lower)
            return list(self._tag_values[key])

    def bpm_values(self) -> np.ndarray:
        """Every track's tempo as float64 (N,), NaN where it has none; cached, so a tempo filter does not walk every
        record."""
        with self._lock:
            if self._bpm is None:
                self._bpm = np.array([float(v) if isinstance(v, (int, float)) else np.nan
                                      for v in self.tracks.column("bpm")], dtype=np.float64)
            return self._bpm

    def column(self, key: str, default=None) -> list:
        """Every track's value of `key`, in row order (`default` where a record has none)."""
        return self.tracks.column(key, default)

    def rows_with(self, key: str, value) -> list[int]:
        """The rows whose `key` ("id", "file_path" or "sha256") equals `value`."""
        return self.tracks.rows_with(key, value)

    def row_of_file(self, file_path: str) -> int | None:
        """The row of the track listed at `file_path` (relative to the library, as stored), or None."""
        return self.tracks.row_of_file(file_path)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])


def empty_database(root: Path, clap_model: str | None = None, dim: int = 0) -> Database:
    """A library of no tracks in `root`, of `dim`-dimensional vectors (0 when not known yet)."""
    return Database(vectors=np.zeros((0, dim), np.float32), tracks=[], segments=np.zeros((0, dim), np.float32),
                    clap_model=clap_model, root=root)


def check_dimension(stored: int, given: int) -> None:
    """Raise DatabaseError when the library's vectors (`stored` dimensions) cannot be compared with the CLAP model's
    (`given`): the library was built with another model."""
    if stored != given:
        raise DatabaseError(f"the database holds {stored}-d vectors but the CLAP model gives {given}-d; {REBUILD}")


def check_clap_model(made_by: str | None, clap_model: str | None) -> None:
    """Refuse a database made by another CLAP checkpoint (either name None: nothing is known, nothing refused).

    A local directory is the same model however it is written: relative or absolute, through a symlink.
    """
    def identity(name: str) -> str:
        path = os.path.expanduser(name)
        return os.path.realpath(path) if os.path.isdir(path) else name

    if clap_model is not None and made_by is not None and identity(made_by) != identity(clap_model):
        raise DatabaseError(f"the database was made with CLAP model {made_by!r}, not {clap_model!r}; rebuild it "
                            f"with: python music_to_vector.py --rebuild --clap-model {clap_model}, or pass "
                            f"--clap-model {made_by}")


def find_track(db: Database, path_or_id: str) -> int:
    """The row of the track named by its id, or by its file's path (as stored, relative to the library, or any
    path to the same file). Raises UnknownTrackError naming what was asked for."""
    wanted = str(path_or_id).strip()
    if wanted:
        rows = sorted(db.rows_with("id", wanted) + db.rows_with("file_path", wanted))
        if rows:
            return rows[0]
    try:
        resolved = Path(wanted).expanduser().resolve()
        root = db.root.resolve()
        row = db.row_of_file(resolved.relative_to(root).as_posix()) if resolved.is_relative_to(root) else None
        if row is not None:
            return row
        if not db.table:  # a track listed through a symlink: a walk a catalogue is spared
            for row, track in enumerate(db.tracks):
                if (db.root / track["file_path"]).resolve() == resolved:
                    return row
    except (OSError, RuntimeError):  # an unresolvable path names no track
        pass
    raise UnknownTrackError(f"{wanted!r} is no track of the library in {db.root} (give a file path from "
                            f"python music_to_vector.py --list, or a track id)")


def compose_database(db: Database, kept: list[dict], keep: list[int], added: list[dict], new_rows: list[np.ndarray],
                     new_segments: list[np.ndarray], clap_name: str, window_s: float) -> Database:
    """The next state of the library: the kept rows of `db` (with their records `kept`), then the added tracks;
    segment offsets are numbered afresh in that order.

    A catalogue's matrices (memory-mapped when loaded) are stacked lazily (rows.RowStack: slices of the committed
    files and the new rows), so a commit never holds them whole; a small library's are plain arrays.
    """
    dim = len(new_rows[0]) if new_rows else db.dim
    old_offsets = db.column("segment_offset", 0) if kept else []
    ranges, offset = [], 0
    for record, i in zip(kept, keep):
        count = int(record.get("segment_count", 0))
        if db.segments is not None and count:
            start = int(old_offsets[i])
            ranges.append((start, start + count))
        if "segment_count" in record:
            record["segment_offset"] = offset
        offset += count
    for record, rows in zip(added, new_segments):
        record["segment_offset"] = offset
        offset += len(rows)
    if is_lazy(db.vectors) or is_lazy(db.segments):
        vectors = stack_rows([take_rows(db.vectors, keep), *new_rows], dim)
        segments = stack_rows([take_ranges(db.segments, ranges) if ranges else np.zeros((0, dim), np.float32),
                               *new_segments], dim)
    else:
        vectors = np.vstack([np.asarray(db.vectors).reshape(-1, dim)[keep], *new_rows]).astype(np.float32)
        segments = np.vstack([np.zeros((0, dim), np.float32), *(db.segments[a:b] for a, b in ranges),
                              *new_segments]).astype(np.float32)
    return Database(vectors=vectors, tracks=kept + added, segments=segments, clap_model=clap_name, root=db.root,
                    window_s=window_s, table=db.table)
