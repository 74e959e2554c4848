"""A library on disk: where it lives (LibraryPaths), its data contract, loading it (load_database) and the one
commit point (save_database, finished by finish_commit). The loaded Database itself: database.py.

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
- music_database_index.faiss (libraries of index.SEARCH_INDEX_MIN_TRACKS or more): a cache of the approximate
  search index, derived from music_database.npy (see index.py). Deleting it is always safe.
"""
from __future__ import annotations

import json
import os
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from music_mood.audio import file_sha256
from music_mood.database import (
    REBUILD,
    Database,
    DatabaseError,
    check_clap_model,
    check_dimension,
    empty_database,
)
from music_mood.datafiles import load_array, load_table, read_metadata, rows_are_unit, staged_path
from music_mood.index import SEARCH_INDEX_MIN_TRACKS
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
from music_mood.tracks import TABLE_MIN_TRACKS, write_table

FORMAT_NAME = "music-mood-database"
FORMAT_VERSION = 1
EMBEDDING_METHOD = ("whole-track: mean of full 10 s windows (the last ends at the track's end) weighted by the new "
                    "audio in each, L2-normalised")
HOME_ENV = "MUSIC_MOOD_HOME"
PROJECT_FOLDER = Path(__file__).resolve().parents[1]  # the source tree: app.py, new_music/ and the package
INSTALLED_LIBRARY = Path("~/music-mood")  # the default library of a pip-installed copy, which has no new_music/
READ_ATTEMPTS = 5  # reads of a library that a builder keeps committing to, before giving up


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
    meta = read_metadata(paths.metadata)
    commit = meta.get("commit") if isinstance(meta, dict) else None
    if commit and _unfinished(paths, commit):
        _finish_if_free(paths)
    vectors = load_array(paths.vectors, commit, "vectors", mmap_min_rows=index_min_tracks)

    if isinstance(meta, list):  # the seed's format: no checkpoint recorded, no segments
        tracks, made_by, segments = meta, None, None
    elif isinstance(meta, dict) and meta.get("format") == FORMAT_NAME and (isinstance(meta.get("tracks"), list)
                                                                            or "tracks_table" in meta):
        if meta.get("version") != FORMAT_VERSION:
            raise DatabaseError(f"{paths.metadata} has format version {meta.get('version')}, this program reads "
                                f"{FORMAT_VERSION}; {REBUILD}")
        made_by = meta.get("clap_model")
        segments = load_array(paths.segments, commit, "segments", mmap_min_rows=index_min_tracks)
        if "tracks_table" in meta:
            # The table's size was checked against the commit, as the segments' was: they were written together,
            # so the segment counts need no sum over every row here (a catalogue opens without reading its rows).
            tracks, expected = load_table(paths.tracks_table, paths.metadata, meta, commit), None
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
    table = isinstance(meta, dict) and "tracks_table" in meta  # its rows were checked as the table was written
    if not table and not all(isinstance(t, dict) and "file_path" in t for t in tracks):
        raise DatabaseError(f"{paths.metadata} has a track without a file_path; {REBUILD}")
    if not rows_are_unit(vectors):
        raise DatabaseError(f"{paths.vectors} has rows that are not unit-length (or not finite); {REBUILD}")
    if dim is not None and len(vectors):
        check_dimension(vectors.shape[1], dim)
    check_clap_model(made_by, clap_model)
    window_s = float(meta.get("embedding", {}).get("window_s", 10.0)) if isinstance(meta, dict) else 10.0
    return Database(vectors=vectors, tracks=tracks, segments=segments, clap_model=made_by, root=paths.root,
                    window_s=window_s, vectors_path=paths.vectors, index_min_tracks=index_min_tracks,
                    table=table)


def _committed_id(paths: LibraryPaths) -> str | None:
    try:
        meta = read_metadata(paths.metadata)
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
        meta = read_metadata(paths.metadata) if paths.metadata.exists() else None
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
        meta = read_metadata(paths.metadata)
    except DatabaseError:
        return []  # nothing committed can be read: the load after this says so (or --rebuild starts afresh)
    return finish_commit(paths, meta["commit"]) if isinstance(meta, dict) and meta.get("commit") else []


def save_database(db: Database, paths: LibraryPaths, sample_rate: int,
                  moves: list[tuple[Path, Path]] = (), sources: list[dict] | None = None) -> list[str]:
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
    `sources` (sources.py) are committed with the tracks; None keeps the committed ones. Must be called under
    the library lock. Returns finish_commit's problem lines.
    """
    if sources is None:
        last = read_metadata(paths.metadata) if paths.metadata.exists() else None
        sources = last.get("sources", []) if isinstance(last, dict) else []
    for source, target in moves:
        obstacle = move_obstacle(source, target)
        if obstacle is not None:
            raise MoveBlockedError(f"cannot move {source} to {target}: {obstacle}")
    moving = {source for source, _ in moves}
    moves = [*moves, *(move for move in pending_moves(paths) if move[0] not in moving)]
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
            **({"sources": sources} if sources else {}),
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
