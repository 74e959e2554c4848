"""The music database: where a library lives, its data contract, and loading and committing it.

Database contract (checked by load_database):
- music_database.npy: float32 (N, D), every row L2-normalised; row i is track i of the metadata.
- music_database_segments.npy: float32 (S, D), one unit row per 10 s window, track i owning rows
  [segment_offset, segment_offset + segment_count).
- music_database_metadata.json: {"format", "version", "clap_model", "embedding": {method, sample_rate,
  window_s, dim}, "commit": {id, vectors_bytes, segments_bytes, moves}, "tracks": [{id, title, artist, mood,
  genre, file_path, duration_s, sha256, segment_offset, segment_count, last_window_start_s, bpm, from_file}]}.
  file_path is relative to the library folder; from_file holds the tags the file itself gave; a track's last
  window starts at last_window_start_s (absent in older databases, whose last window is zero-padded); bpm is
  its tempo, a float with one decimal, null when no beat stands out, absent for a track added before tempos were
  stored (music_to_vector.py reads it). A seed-format file (a bare list of {id, file_path, title, mood, genre})
  still loads, without segments.
- A catalogue (tracks.TABLE_MIN_TRACKS tracks or more, and a library once stored so until --rebuild) keeps its
  records in music_database_metadata.sqlite instead (the table of tracks.py, read lazily): the metadata JSON then
  holds "tracks_table": that file's name and "track_count" in place of "tracks", and the commit its
  "tracks_bytes". Small libraries keep the records inline, readable as plain JSON.
- One commit point (save_database): the data files of a change (vectors, segments, the track table) are written
  under new names first; replacing the metadata JSON, which names them, commits the change; they are renamed
  into place after. A reader sees the old library or the new one, and a crash after the commit is finished from
  the metadata (finish_commit).
- music_database_index.faiss (libraries of search.SEARCH_INDEX_MIN_TRACKS or more): a cache of the approximate
  search index, derived from music_database.npy (see search.py). Deleting it is always safe.
"""
from __future__ import annotations

import json
import os
import secrets
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from music_mood.audio import AUDIO_EXTENSIONS, file_sha256
from music_mood.rows import save_rows
from music_mood.storage import (
    LibraryBusyError,
    acquire_lock,
    disk_full_error,
    fsync_dir,
    is_disk_full,
    move_file,
    move_obstacle,
    remove,
    remove_empty_folders,
    rename,
    write_atomically,
    write_new_file,
    write_new_file_at,
)
from music_mood.tracks import (
    TABLE_MIN_TRACKS,
    TableError,
    TrackTable,
    column,
    rows_with,
    tag_rows,
    tag_values,
    write_table,
)

FORMAT_NAME = "music-mood-database"
FORMAT_VERSION = 1
EMBEDDING_METHOD = ("whole-track: mean of full 10 s windows (the last ends at the track's end) weighted by the new "
                    "audio in each, L2-normalised")
HOME_ENV = "MUSIC_MOOD_HOME"
PROJECT_FOLDER = Path(__file__).resolve().parents[1]  # the source tree: app.py, new_music/ and the package
INSTALLED_LIBRARY = Path("~/music-mood")  # the default library of a pip-installed copy, which has no new_music/
NORM_TOLERANCE = 1e-3
# From this many tracks on, a query is answered by a faiss index (search.py) instead of a scan of every row, and
# the vectors stay memory-mapped: an exact scan of 200 000 x 512 float32 rows already reads 400 MB per query.
# Below it, exact search is fast and stays the default.
SEARCH_INDEX_MIN_TRACKS = 200_000
REBUILD = "rebuild it with: python music_to_vector.py --rebuild"
EMPTY_LIBRARY = ("the music library is empty: put audio files in new_music/ and run python music_to_vector.py, "
                 "or import the bundled tracks with python music_to_vector.py --sample")
READ_ATTEMPTS = 5  # reads of a library that a builder keeps committing to, before giving up


class DatabaseError(RuntimeError):
    """The database files are missing pieces, corrupt, or were made by another model; the message says what to do."""


class EmptyLibraryError(DatabaseError):
    """There is nothing to recommend from (no tracks, or none left after the filters)."""


class MoveBlockedError(OSError):
    """A change moves a file to where it cannot go (a file where a folder must be, a folder that cannot be
    written): refused before its commit, so nothing was changed."""


def default_library_folder() -> Path:
    """The source tree's own folder when run from it (it has new_music/), else ~/music-mood: an installed copy
    lives in site-packages, which is no place for a user's music."""
    return PROJECT_FOLDER if (PROJECT_FOLDER / "new_music").is_dir() else INSTALLED_LIBRARY.expanduser()


@dataclass(frozen=True)
class LibraryPaths:
    """Where one music library lives. file_path in the metadata is relative to `root`."""

    root: Path
    vectors: Path
    metadata: Path
    new_music: Path
    processed_music: Path

    @property
    def segments(self) -> Path:
        return self.vectors.with_name(self.vectors.stem + "_segments.npy")

    @property
    def tracks_table(self) -> Path:
        """The catalogue's track table (tracks.py), beside the metadata JSON that commits it."""
        return self.metadata.with_suffix(".sqlite")

    def data_files(self) -> tuple[Path, Path, Path]:
        """The files a commit writes under new names and the metadata names: vectors, segments, track table."""
        return self.vectors, self.segments, self.tracks_table

    @property
    def lock(self) -> Path:
        return self.vectors.with_name(self.vectors.stem + ".lock")

    @classmethod
    def at(cls, root=None, vectors=None, metadata=None) -> LibraryPaths:
        """The library in `root` (default: $MUSIC_MOOD_HOME, else this project's folder); files may be overridden."""
        root = Path(root or os.environ.get(HOME_ENV) or default_library_folder()).resolve()
        return cls(
            root=root,
            vectors=Path(vectors).resolve() if vectors else root / "music_database.npy",
            metadata=Path(metadata).resolve() if metadata else root / "music_database_metadata.json",
            new_music=root / "new_music",
            processed_music=root / "processed_music",
        )


@dataclass
class Database:
    """The loaded library: vectors float32 (N, D), tracks (N records: a list, or a tracks.TrackTable read lazily),
    segments float32 (S, D) or None. Ask all records at once through column()/rows_with(), which a table answers
    by a query, rather than by walking `tracks`."""

    vectors: np.ndarray
    tracks: list[dict] | TrackTable
    segments: np.ndarray | None = None
    clap_model: str | None = None
    root: Path = field(default_factory=Path)
    window_s: float = 10.0  # length of one segment: segment j starts at j * window_s, but a track's last one
    # starts at its record's last_window_start_s (see recommend.best_segment_start)
    vectors_path: Path | None = None  # where `vectors` was loaded from; the search index is cached next to it
    index_min_tracks: int = SEARCH_INDEX_MIN_TRACKS  # from this many tracks on, search_index() gives an index
    table: bool = False  # the records are committed as a track table (set on load; compose and edits carry it)
    _index: object = field(default=None, repr=False, compare=False)
    _tag_rows: dict = field(default_factory=dict, repr=False, compare=False)
    _tag_values: dict = field(default_factory=dict, repr=False, compare=False)
    _bpm: object = field(default=None, repr=False, compare=False)
    _file_rows: dict | None = field(default=None, repr=False, compare=False)
    _lock: object = field(default_factory=threading.Lock, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.tracks)

    def search_index(self):
        """The faiss index over `vectors` when the library has index_min_tracks or more, else None.

        Loaded from its cache file (or built, then cached) on first use, once per Database.
        """
        from music_mood.search import load_search_index

        if len(self) < self.index_min_tracks:
            return None
        with self._lock:
            if self._index is None:
                self._index = load_search_index(self.vectors, self.vectors_path)
        return self._index

    def rows_tagged(self, key: str, wanted) -> np.ndarray:
        """The rows (int64, ascending) whose own tag of `key` (mood, genre: a folder mood, a file genre) or one of
        whose automatic tags of that kind, lower-cased, is in `wanted` (lower-case words). A table answers by one
        query; a list is indexed once per Database."""
        if isinstance(self.tracks, TrackTable):
            return np.array(self.tracks.rows_tagged(key, sorted(wanted)), dtype=np.int64)
        with self._lock:
            if key not in self._tag_rows:
                self._tag_rows[key] = tag_rows(self.tracks, key)
            found = [self._tag_rows[key].get(w, []) for w in wanted]
        return np.unique(np.concatenate([np.zeros(0, np.int64), *map(np.asarray, found)])).astype(np.int64)

    def tag_values(self, key: str) -> list[str]:
        """The distinct non-empty values of one tag (mood, genre), the tracks' own and automatic, sorted
        case-insensitively; cached."""
        with self._lock:
            if key not in self._tag_values:
                self._tag_values[key] = sorted(tag_values(self.tracks, key), key=str.lower)
            return list(self._tag_values[key])

    def bpm_values(self) -> np.ndarray:
        """Every track's tempo as float64 (N,), NaN where it has none; cached, so a tempo filter does not walk every
        record."""
        with self._lock:
            if self._bpm is None:
                self._bpm = np.array([float(v) if isinstance(v, (int, float)) else np.nan
                                      for v in column(self.tracks, "bpm")], dtype=np.float64)
            return self._bpm

    def column(self, key: str, default=None) -> list:
        """Every track's value of `key`, in row order (`default` where a record has none)."""
        return column(self.tracks, key, default)

    def rows_with(self, key: str, value) -> list[int]:
        """The rows whose `key` ("id", "file_path" or "sha256") equals `value`."""
        return rows_with(self.tracks, key, value)

    def row_of_file(self, file_path: str) -> int | None:
        """The row of the track listed at `file_path` (relative to the library, as stored), or None."""
        if isinstance(self.tracks, TrackTable):
            rows = self.tracks.rows_with("file_path", str(file_path))
            return rows[0] if rows else None
        with self._lock:
            if self._file_rows is None:
                self._file_rows = {str(t["file_path"]): row for row, t in reversed(list(enumerate(self.tracks)))}
        return self._file_rows.get(str(file_path))

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def track_path(self, i: int) -> Path:
        return (self.root / self.tracks[i]["file_path"]).resolve()


def empty_database(root: Path, clap_model: str | None = None, dim: int = 0) -> Database:
    return Database(vectors=np.zeros((0, dim), np.float32), tracks=[], segments=np.zeros((0, dim), np.float32),
                    clap_model=clap_model, root=root)


def load_database(paths: LibraryPaths, clap_model: str | None = None, dim: int | None = None,
                  index_min_tracks: int | None = None) -> Database:
    """Load and check the last committed database. No files at all is an empty library; anything inconsistent is
    a DatabaseError.

    A commit that a crash left half done (its data files not yet renamed into place, its moves not yet made) is
    read as committed, and finished here when the library lock is free. A commit made while the files are being
    read is noticed (the metadata changed) and the read starts again, so the result is one committed state.
    With `clap_model`/`dim`, a database made by another CLAP checkpoint or of another dimension is refused. A
    library of `index_min_tracks` (default SEARCH_INDEX_MIN_TRACKS) or more tracks stays memory-mapped, vectors
    and windows, and is searched through an index.
    """
    if index_min_tracks is None:
        index_min_tracks = SEARCH_INDEX_MIN_TRACKS
    for _ in range(READ_ATTEMPTS):
        before = committed_state(paths)
        db = _load_committed(paths, clap_model, dim, index_min_tracks)
        if committed_state(paths) == before:
            return db
    raise DatabaseError(f"{paths.metadata} kept changing while it was read (a builder is committing); try again")


def committed_state(paths: LibraryPaths) -> tuple | None:
    """A cheap identity of the committed library (the metadata file's inode, mtime and size): every commit
    replaces that file, so this changes exactly when the library does. None when there is no database."""
    try:
        st = os.stat(paths.metadata)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _load_committed(paths: LibraryPaths, clap_model: str | None, dim: int | None,
                    index_min_tracks: int = SEARCH_INDEX_MIN_TRACKS) -> Database:
    if not paths.vectors.exists() and not paths.metadata.exists():
        return empty_database(paths.root, clap_model, dim or 0)
    if not paths.metadata.exists():
        raise DatabaseError(f"{paths.metadata} is missing while {paths.vectors} exists; {REBUILD}")
    meta = _read_metadata(paths)
    commit = meta.get("commit") if isinstance(meta, dict) else None
    if commit and _unfinished(paths, commit):
        _finish_if_free(paths)
    vectors = _load_array(paths.vectors, commit, "vectors", mmap_min_rows=index_min_tracks)

    if isinstance(meta, list):  # the seed's format: no checkpoint recorded, no segments
        tracks, made_by, segments = meta, None, None
    elif isinstance(meta, dict) and meta.get("format") == FORMAT_NAME and (isinstance(meta.get("tracks"), list)
                                                                            or "tracks_table" in meta):
        if meta.get("version") != FORMAT_VERSION:
            raise DatabaseError(f"{paths.metadata} has format version {meta.get('version')}, this program reads "
                                f"{FORMAT_VERSION}; {REBUILD}")
        made_by = meta.get("clap_model")
        segments = _load_array(paths.segments, commit, "segments", mmap_min_rows=index_min_tracks)
        if "tracks_table" in meta:
            # The table's size was checked against the commit, as the segments' was: they were written together,
            # so the segment counts need no sum over every row here (a catalogue opens without reading its rows).
            tracks, expected = _load_table(paths, meta, commit), None
        else:
            tracks = meta["tracks"]
            expected = sum(int(t.get("segment_count", 0)) for t in tracks if isinstance(t, dict))
        if (segments.ndim != 2 or segments.dtype != np.float32
                or (expected is not None and len(segments) != expected)):
            raise DatabaseError(f"{paths.segments} does not match the metadata ({segments.shape} for {expected} "
                                f"segments); {REBUILD}")
    else:
        raise DatabaseError(f"{paths.metadata} is not a music database metadata file; {REBUILD}")

    if vectors.ndim != 2 or vectors.dtype != np.float32:
        raise DatabaseError(f"{paths.vectors} holds {vectors.dtype} {vectors.shape}, not a float32 (N, D) matrix; "
                            f"{REBUILD}")
    if len(vectors) != len(tracks):
        raise DatabaseError(f"{paths.vectors} has {len(vectors)} rows but {paths.metadata} lists {len(tracks)} "
                            f"tracks; {REBUILD}")
    if isinstance(tracks, list) and not all(isinstance(t, dict) and "file_path" in t for t in tracks):
        raise DatabaseError(f"{paths.metadata} has a track without a file_path; {REBUILD}")
    if not _rows_are_unit(vectors):
        raise DatabaseError(f"{paths.vectors} has rows that are not unit-length (or not finite); {REBUILD}")
    if dim is not None and len(vectors):
        check_dimension(vectors.shape[1], dim)
    check_clap_model(made_by, clap_model)
    window_s = float(meta.get("embedding", {}).get("window_s", 10.0)) if isinstance(meta, dict) else 10.0
    return Database(vectors=vectors, tracks=tracks, segments=segments, clap_model=made_by, root=paths.root,
                    window_s=window_s, vectors_path=paths.vectors, index_min_tracks=index_min_tracks,
                    table=isinstance(tracks, TrackTable))


def _load_table(paths: LibraryPaths, meta: dict, commit: dict | None) -> TrackTable:
    """The committed track table: its staged file while not yet renamed into place, else its final name; its
    size must be the one the commit recorded, its row count the metadata's."""
    final = paths.tracks_table
    if meta["tracks_table"] != final.name or not commit or "tracks_bytes" not in commit:
        raise DatabaseError(f"{paths.metadata} names the track table {meta['tracks_table']!r}, not {final.name} "
                            f"with its size; {REBUILD}")
    for path in (staged_path(final, commit["id"]), final):
        try:
            size = path.stat().st_size
            table = TrackTable(path)
        except (FileNotFoundError, TableError) as e:
            if path != final and not path.exists():
                continue  # renamed into place since we looked: `final` is that file now
            if isinstance(e, FileNotFoundError):
                raise DatabaseError(f"{final} is missing while the metadata lists it; {REBUILD}") from e
            raise DatabaseError(f"{e}; {REBUILD}") from e
        if size != commit["tracks_bytes"] or len(table) != meta.get("track_count"):
            table.close()
            raise DatabaseError(f"{final} ({size} bytes, {len(table)} tracks) is not the table the metadata's last "
                                f"commit wrote ({commit['tracks_bytes']} bytes, {meta.get('track_count')} tracks); "
                                f"{REBUILD}")
        return table
    raise AssertionError("unreachable: the last candidate is `final`")


def _read_metadata(paths: LibraryPaths):
    try:
        return json.loads(paths.metadata.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatabaseError(f"cannot read {paths.metadata} ({e}); {REBUILD}") from e


def staged_path(final: Path, commit_id: str) -> Path:
    """Where a commit's new data file is written before the commit names it; renamed to `final` after."""
    return final.with_name(f".{final.name}.commit-{commit_id}")


def _load_array(final: Path, commit: dict | None, kind: str, mmap_min_rows: int | None = None) -> np.ndarray:
    """One data file of the committed state: its staged file while that is not yet renamed into place, else
    `final`. Its size must be the one the commit recorded (a commit's files are never mixed with another's).
    A matrix of `mmap_min_rows` rows or more stays memory-mapped."""
    candidates = [final] if not commit else [staged_path(final, commit["id"]), final]
    for path in candidates:
        try:
            size = path.stat().st_size
            # A large library stays memory-mapped: the index answers queries, and only the rows it proposes are read.
            array = np.load(path, mmap_mode="r" if mmap_min_rows else None, allow_pickle=False)
        except FileNotFoundError as e:
            if path != final:
                continue  # renamed into place since we looked: `final` is that file now
            raise DatabaseError(f"{final} is missing while the metadata lists it; {REBUILD}") from e
        except (OSError, ValueError, EOFError) as e:
            raise DatabaseError(f"cannot read {path} ({e}); {REBUILD}") from e
        expected = commit.get(f"{kind}_bytes") if commit else None
        if expected is not None and size != expected:
            raise DatabaseError(f"{final} ({size} bytes) is not the file the metadata's last commit wrote "
                                f"({expected} bytes); {REBUILD}")
        if mmap_min_rows and (array.ndim != 2 or len(array) < mmap_min_rows):
            array = np.array(array)
        return array
    raise AssertionError("unreachable: the last candidate is `final`")


def _committed_id(paths: LibraryPaths) -> str | None:
    try:
        meta = _read_metadata(paths)
    except DatabaseError:
        return None
    return (meta.get("commit") or {}).get("id") if isinstance(meta, dict) else None


def _unfinished(paths: LibraryPaths, commit: dict) -> bool:
    """Whether a crash stopped `commit` after its commit point: a staged file or a recorded move still waits."""
    return (any(staged_path(final, commit["id"]).exists() for final in paths.data_files())
            or any(os.path.lexists(paths.root / source) for source, _ in commit.get("moves", [])))


def _finish_if_free(paths: LibraryPaths) -> None:
    """Finish a half-done commit from a reader, unless a builder holds the lock (it finishes it) or the library
    cannot be written (then the staged files are read where they are)."""
    try:
        lock = acquire_lock(paths.lock, timeout=0)
    except (LibraryBusyError, OSError):
        return
    try:
        for line in recover_library(paths):  # reads the commit again: it may have been superseded meanwhile
            print(line, file=sys.stderr)
    except OSError as e:  # a reader serves the committed state whatever stops it from finishing the commit
        print(f"Warning: cannot finish the library's last commit yet ({e}); it is read as committed.",
              file=sys.stderr)
    finally:
        lock.release()


def pending_moves(paths: LibraryPaths) -> list[tuple[Path, Path]]:
    """The file moves the committed state records that are not made yet (source there, target free): a crash, or a
    failure after the commit (a permission changed, a full disk), stopped them. The next writer makes them, and
    carries them into its own commit until then."""
    commit = _last_commit(paths)
    moves = [(paths.root / source, paths.root / target) for source, target in (commit or {}).get("moves", [])]
    return [(source, target) for source, target in moves if os.path.lexists(source) and not os.path.lexists(target)]


def _last_commit(paths: LibraryPaths) -> dict | None:
    """The committed metadata's "commit" record, or None (no library, or one that cannot be read)."""
    try:
        meta = _read_metadata(paths) if paths.metadata.exists() else None
    except DatabaseError:
        return None
    return meta.get("commit") if isinstance(meta, dict) else None


def pending_move_warning(source: Path, target: Path, reason: str) -> str:
    """The line that names a move the commit records but that could not be made yet, and why."""
    return (f"Warning: {source} is still to be moved to {target} ({reason}); the library is served as committed, "
            f"and the next change to it (python music_to_vector.py, --remove, --set-...) moves it once that is fixed.")


def finish_commit(paths: LibraryPaths, commit: dict) -> list[str]:
    """Roll the committed state forward (under the library lock): rename its staged data files into place, make
    the file moves it records, and remove what crashed writes left (staged files of commits that never
    happened, temp files of the database's own names). Idempotent. Returns a line per move it could not make: a
    move that fails (its folder became a file, a permission changed, the disk is full) stays pending in the
    commit, never fails the load or the change (see pending_moves)."""
    renamed = set()
    for final in paths.data_files():
        staged = staged_path(final, commit["id"])
        if staged.exists():
            rename(staged, final)
            renamed.add(final.parent)
    for folder in renamed:
        fsync_dir(folder)
    problems = []
    for source, target in commit.get("moves", []):
        source, target = paths.root / source, paths.root / target
        if not os.path.lexists(source):
            continue
        if not os.path.lexists(target):
            obstacle = move_obstacle(source, target)
            try:
                if obstacle is None:
                    move_file(source, target)
            except OSError as e:
                obstacle = e.strerror or str(e)
            if obstacle is not None:
                problems.append(pending_move_warning(source, target, obstacle))
                continue
        elif source.is_file() and target.is_file() and file_sha256(source) == file_sha256(target):
            remove(source)  # a copy across file systems finished, its source not yet removed: finish the move
        else:
            problems.append(f"Warning: {source} should have moved to {target}, which is another file now; "
                            f"left where it is.")
            continue
        remove_empty_folders(source.parent, paths.new_music)
    if "tracks_bytes" not in commit and paths.tracks_table.exists():
        remove(paths.tracks_table)  # a catalogue's table, superseded by a --rebuild into a small library
    _remove_leftovers(paths)
    return problems


def _remove_leftovers(paths: LibraryPaths) -> None:
    """Remove what crashed writes left: staged files of commits that never happened, temp files of the
    database's own names. Only files of those exact names; called under the lock, after the commit is done."""
    for final in (*paths.data_files(), paths.metadata):
        for leftover in final.parent.glob(f".{final.name}.*"):
            if leftover.name.endswith(".tmp") or ".commit-" in leftover.name:
                remove(leftover)


def recover_library(paths: LibraryPaths) -> list[str]:
    """Under the library lock, before a change: finish the last commit if a crash left it half done."""
    if not paths.metadata.exists():
        _remove_leftovers(paths)  # of a first commit that never happened
        return []
    try:
        meta = _read_metadata(paths)
    except DatabaseError:
        return []  # nothing committed can be read: the load after this says so (or --rebuild starts afresh)
    return finish_commit(paths, meta["commit"]) if isinstance(meta, dict) and meta.get("commit") else []


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


def _rows_are_unit(vectors: np.ndarray, chunk: int = 65_536) -> bool:
    """Every row finite and of length 1 within NORM_TOLERANCE; in chunks, so no (N, D) temporary is made."""
    for start in range(0, len(vectors), chunk):
        rows = np.asarray(vectors[start:start + chunk], dtype=np.float64)
        norms = np.sqrt(np.einsum("ij,ij->i", rows, rows))
        if not np.all(np.abs(norms - 1) < NORM_TOLERANCE):
            return False
    return True


def save_database(db: Database, paths: LibraryPaths, sample_rate: int,
                  moves: list[tuple[Path, Path]] = ()) -> list[str]:
    """Commit `db`, and the moves of files from new_music/ into processed_music/ that it lists, in one step.

    1. The vectors and segments (and for a catalogue the track table: db.table, or TABLE_MIN_TRACKS tracks or
       more) are written under new names (staged_path) and fsynced; nothing names them yet.
    2. The commit point: the metadata, naming the commit, its files' sizes and the moves, replaces the old one
       atomically. Before it a reader sees the old library, after it the new one.
    3. finish_commit renames the staged files into place and makes the moves. A crash there is finished by the
       next load or build, from the metadata alone: nothing is embedded again.
    A full disk before the commit point is a DiskFullError (what was staged is removed: nothing was changed).
    A move whose destination cannot be made is refused first (MoveBlockedError: nothing was changed); the moves
    of the last commit still pending (pending_moves) are carried into this one, so none is forgotten.
    Must be called under the library lock. Returns finish_commit's problem lines.
    """
    for source, target in moves:
        obstacle = move_obstacle(source, target)
        if obstacle is not None:
            raise MoveBlockedError(f"cannot move {source} to {target}: {obstacle}")
    sources = {source for source, _ in moves}
    moves = [*moves, *(move for move in pending_moves(paths) if move[0] not in sources)]
    commit = {"id": time.strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(4),
              "moves": [[source.relative_to(paths.root).as_posix(), target.relative_to(paths.root).as_posix()]
                        for source, target in moves]}
    staged = []
    try:
        for kind, final, array in (("vectors", paths.vectors, db.vectors), ("segments", paths.segments, db.segments)):
            path = staged_path(final, commit["id"])
            staged.append(path)
            write_new_file(path, lambda f: save_rows(f, array))
            commit[f"{kind}_bytes"] = path.stat().st_size
        as_table = db.table or len(db) >= TABLE_MIN_TRACKS
        if as_table:
            path = staged_path(paths.tracks_table, commit["id"])
            staged.append(path)
            write_new_file_at(path, lambda target: write_table(target, db.tracks))
            commit["tracks_bytes"] = path.stat().st_size
        for folder in dict.fromkeys(final.parent for final in paths.data_files()):
            fsync_dir(folder)
        meta = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "clap_model": db.clap_model,
            "embedding": {"method": EMBEDDING_METHOD, "sample_rate": sample_rate, "window_s": db.window_s,
                          "dim": db.dim},
            "commit": commit,
            **({"tracks_table": paths.tracks_table.name, "track_count": len(db)} if as_table
               else {"tracks": list(db.tracks)}),
        }
        write_atomically(paths.metadata, lambda f: f.write(json.dumps(meta, indent=1, ensure_ascii=False).encode()))
    except BaseException as e:
        # Not committed (unless the failure came after the rename, while syncing the folder): drop what we staged.
        if _committed_id(paths) != commit["id"]:
            for path in staged:
                path.unlink(missing_ok=True)
            if is_disk_full(e):
                raise disk_full_error(paths.metadata.parent) from e
        raise
    return finish_commit(paths, commit)


class LiveLibrary:
    """A library as last committed, for a long-running reader (the web app): each request takes one Database from
    current() and uses it throughout, so it sees one version even while a builder commits the next."""

    def __init__(self, paths: LibraryPaths, clap_model: str):
        self.paths = paths
        self.clap_model = clap_model
        self._lock = threading.Lock()
        self._db: Database | None = None
        self._version: tuple | None = None
        self.current()  # a library that cannot be read is an error at start-up, not at the first request

    def current(self) -> Database:
        """The database as last committed, read again only when its commit point changed (after an upload, or
        `python music_to_vector.py` run meanwhile); one stat per call otherwise. Raises DatabaseError."""
        with self._lock:  # one reader loads a new version; the requests arriving meanwhile wait for it
            return self._refresh()

    def track_file(self, file_path: str) -> Path | None:
        """The file to send for `file_path` when it names a track of the current library, else None.

        A track is sent as listed, through a symlink too (it may point outside the library); a record that names
        a place outside processed_music/ or a file that is not audio is never sent, whatever the metadata says.
        """
        with self._lock:
            db = self._refresh()
        listed = db.row_of_file(file_path) is not None
        parts = PurePosixPath(file_path).parts
        path = db.root / file_path
        if (not listed or ".." in parts or path.suffix.lower() not in AUDIO_EXTENSIONS
                or not path.is_relative_to(self.paths.processed_music)):
            return None
        return path

    def _refresh(self) -> Database:
        """The current Database, read again if the commit point changed; the caller holds the lock."""
        version = committed_state(self.paths)  # taken before reading: a commit meanwhile is seen next time
        if self._db is None or version != self._version:
            self._db = load_database(self.paths, clap_model=self.clap_model)
            self._version = version
        return self._db


class UnknownTrackError(LookupError):
    """A path or id that names no track of the library."""


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
