"""Changing tracks the library already holds: removing them (their file goes to removed/) and correcting their
tags. Each change is one commit through library.save_database, under the library lock, like adding music."""
from __future__ import annotations

import json
import os
import unicodedata
from pathlib import Path

from music_mood.database import REBUILD, Database, DatabaseError, UnknownTrackError, compose_database, find_track
from music_mood.library import LibraryPaths, load_database, pending_moves, recover_library, save_database
from music_mood.relocate import TAG_KEYS
from music_mood.remote import is_server_source, server_song
from music_mood.server_sources import check_new_server, is_server_address, log_in, new_server_source
from music_mood.sources import (
    REMOVED_FOLDER,
    ScanCache,
    check_new_folder,
    committed_sources,
    find_source,
    new_source,
    source_of,
)
from music_mood.storage import acquire_lock
from music_mood.subsonic import forget_password, parse_server, store_password

__all__ = ["REMOVED_FOLDER", "add_source", "remove_source", "remove_tracks", "restore_tracks", "set_fields"]

EDITABLE_FIELDS = TAG_KEYS  # what --set-FIELD corrects; a correction differs from the record's from_file, so a
# --rebuild keeps it (build._new_record)
# A field is one line of text of at most this many characters: a name may be long, a tag is a word or two.
FIELD_MAX_CHARS = {"title": 500, "artist": 500, "mood": 64, "genre": 64}
# What no field may hold: control characters (newline, tab, NUL...), line and paragraph separators, lone
# surrogates. They would break the --list table, a playlist's line or a file name made from a tag.
_NOT_TEXT = {"Cc", "Cs", "Zl", "Zp"}


class FieldValueError(ValueError):
    """A value a track's field cannot hold: not text, more than one line, or too long."""


def field_value(name: str, value) -> str:
    """`value` as field `name` of a track stores it: stripped text of one line, at most FIELD_MAX_CHARS[name]
    characters (None clears the field: ""). Anything else is FieldValueError; `name` must be one of
    EDITABLE_FIELDS (else ValueError)."""
    if name not in EDITABLE_FIELDS:
        raise ValueError(f"cannot set {name!r}: a track's editable fields are {', '.join(EDITABLE_FIELDS)}")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise FieldValueError(f"the {name} must be text, not {type(value).__name__}")
    text = value.strip()
    if any(unicodedata.category(c) in _NOT_TEXT for c in text):
        raise FieldValueError(f"the {name} must be one line of printable text (no line breaks, tabs or control "
                              f"characters)")
    if len(text) > FIELD_MAX_CHARS[name]:
        raise FieldValueError(f"the {name} is {len(text)} characters long; at most {FIELD_MAX_CHARS[name]}")
    return text


def _row(db: Database, key: str) -> int:
    """find_track, with the error saying that the library was left as it was."""
    try:
        return find_track(db, key)
    except UnknownTrackError as e:
        raise UnknownTrackError(f"{e.args[0]}; nothing was changed") from None


def removed_destination(file_path: str, paths: LibraryPaths, taken: set[Path]) -> Path:
    """Where a removed track's file goes: removed/ with its sub-path in processed_music/ kept, never over another
    file (a track removed earlier under the same name stays)."""
    source = paths.root / file_path
    inside = source.relative_to(paths.processed_music if source.is_relative_to(paths.processed_music) else paths.root)
    target = paths.root / REMOVED_FOLDER / inside
    stem, n = target.stem, 2
    while os.path.lexists(target) or target in taken:
        target = target.with_name(f"{stem} ({n}){target.suffix}")
        n += 1
    return target


def remove_tracks(paths: LibraryPaths, keys: list[str], lock_timeout: float = 600) -> tuple[list, list[str]]:
    """Remove the tracks that `keys` name (see find_track): their rows, their windows and the move of their file
    to removed/ are one commit. A source's track (sources.py) keeps its file where it is, untouched: its content
    is noted in its source's "excluded", so later builds leave it out until restore_tracks. Every key must name a
    track, else nothing changes (UnknownTrackError). Returns ([(record, where its file went, None if it was
    already gone or stays in its source)], problem lines for stderr)."""
    sources = committed_sources(paths)

    def change(db: Database):
        sources[:] = committed_sources(paths)
        rows = sorted({_row(db, key) for key in keys})
        # A move the last commit could not make yet: the track's file is still at its source, its target taken.
        pending = {target: source for source, target in pending_moves(paths)}
        removed, moves, taken = [], [], set(pending)
        for i in rows:
            record = db.tracks[i]
            source = paths.root / record["file_path"]
            source = pending.get(source, source)
            target = None
            if record.get("source"):
                excluded = find_source(sources, record["source"])["excluded"]
                excluded += [record["sha256"]] if record["sha256"] not in excluded else []
            elif os.path.lexists(source):
                target = removed_destination(record["file_path"], paths, taken)
                taken.add(target)
                moves.append((source, target))
            removed.append((record, target))
        keep = [i for i in range(len(db)) if i not in set(rows)]
        return compose_database(db, [dict(db.tracks[i]) for i in keep], keep, [], [], [], db.clap_model, db.window_s), \
            moves, removed

    return _commit_change(paths, change, lock_timeout, sources)


def set_fields(paths: LibraryPaths, edits: list[tuple[str, str, str]],
               lock_timeout: float = 600) -> tuple[list, list[str]]:
    """Apply corrections (track key, field, value), all in one commit; the vectors stay as they are.

    `field` is one of EDITABLE_FIELDS (else ValueError), each value one it can hold (field_value, else
    FieldValueError); every key must name a track (else UnknownTrackError); either way nothing changes. Returns
    ([(record after the change, field, old value)], problem lines for stderr).
    """
    edits = [(key, name, field_value(name, value)) for key, name, value in edits]  # all checked before the lock

    def change(db: Database):
        tracks = [dict(t) for t in db.tracks]
        done = []
        for key, name, value in edits:
            record = tracks[_row(db, key)]
            old = str(record.get(name, "") or "")
            record[name] = value
            done.append((record, name, old))
        edited = Database(vectors=db.vectors, tracks=tracks, segments=db.segments, clap_model=db.clap_model,
                          root=db.root, window_s=db.window_s, table=db.table)
        return edited, [], done

    return _commit_change(paths, change, lock_timeout)


def _commit_change(paths: LibraryPaths, change, lock_timeout: float, sources: list[dict] | None = None):
    """Under the lock: finish a half-done commit, load, `change(db)` → (new db, moves, result), commit (with
    `sources`, which `change` may have changed; None keeps them); returns (result, problem lines of the recovery
    and the commit's moves)."""
    lock = acquire_lock(paths.lock, lock_timeout)
    try:
        warnings = recover_library(paths)
        db = load_database(paths)
        if db.segments is None:
            raise DatabaseError(f"{paths.metadata} is in the old format without windows; {REBUILD}")
        new, moves, result = change(db)
        warnings += save_database(new, paths, _sample_rate(paths), moves, sources)
    finally:
        lock.release()
    return result, warnings


def committed_track_count(paths: LibraryPaths) -> int:
    """How many tracks the library holds as last committed, from the metadata alone (no load: a load would try
    again a move that just failed, and warn a second time)."""
    meta = json.loads(paths.metadata.read_text(encoding="utf-8"))
    return int(meta["track_count"]) if "track_count" in meta else len(meta["tracks"])


def _sample_rate(paths: LibraryPaths) -> int:
    """The sample rate the committed library was embedded at (kept by a change that embeds nothing); 0 for a
    library not made yet (a source added first: the first build that embeds records the real one)."""
    if not paths.metadata.exists():
        return 0
    return int(json.loads(paths.metadata.read_text(encoding="utf-8"))["embedding"]["sample_rate"])


def add_source(paths: LibraryPaths, folder: str | Path, lock_timeout: float = 600, interactive: bool = True) -> dict:
    """Register `folder` as a source of the library (sources.check_new_folder says why not: SourceError), in one
    commit; its files are added by the next build. Nothing in the folder is read or written here.

    `folder` may be a Subsonic server's address (http(s)://USER@HOST:PORT[/prefix]): it is logged in to first, with
    the password of $MUSIC_MOOD_SUBSONIC_PASSWORD or typed on the terminal (`interactive`), which is then stored
    for later runs (subsonic.passwords: mode 0600, outside the library); a wrong password or a server that does
    not answer registers nothing (SubsonicError)."""
    server = None
    if is_server_address(str(folder)):
        server = check_new_server(str(folder), committed_sources(paths))
        store_password(server, log_in(server, interactive))

    def change(db: Database):
        sources[:] = committed_sources(paths)  # as committed under the lock
        if server is None:
            sources.append(new_source(check_new_folder(folder, paths, sources)))
        else:
            sources.append(new_server_source(check_new_server(str(server), sources)))
        return db, [], sources[-1]

    sources = committed_sources(paths)
    return _commit_change(paths, change, lock_timeout, sources)[0]


def remove_source(paths: LibraryPaths, folder: str | Path, lock_timeout: float = 600) -> tuple[dict, int]:
    """Take the source of `folder` (a folder or a server's address) out of the library with its tracks, in one
    commit; no file is touched. A server's stored password is forgotten. Returns (the source, how many tracks
    went)."""
    key = str(parse_server(str(folder))) if is_server_address(str(folder)) else None

    def change(db: Database):
        sources[:] = committed_sources(paths)
        gone = find_source(sources, folder, key)
        sources.remove(gone)
        keep = [i for i, t in enumerate(db.tracks) if t.get("source") != gone["path"]]
        new = compose_database(db, [dict(db.tracks[i]) for i in keep], keep, [], [], [], db.clap_model, db.window_s)
        return new, [], (gone, len(db) - len(keep))

    sources = committed_sources(paths)
    gone, count = _commit_change(paths, change, lock_timeout, sources)[0]
    if is_server_source(gone):
        forget_password(parse_server(gone["path"]))
    return gone, count


def restore_tracks(paths: LibraryPaths, files: list[str], lock_timeout: float = 600) -> list[str]:
    """Let files of a source that --remove took out back in (one commit); the next build adds them. Each must be
    a file of a source (or a server track's file_path, ADDRESS#song=ID), removed by hand (else UnknownTrackError,
    nothing changed). Returns the files."""
    def change(db: Database):
        sources[:], cache = committed_sources(paths), ScanCache(paths)
        restored = []
        for name in files:
            source, sha256, shown = _removed_content(name, sources, cache)
            if sha256 is None or sha256 not in source["excluded"]:
                raise UnknownTrackError(f"{shown} is no file of a source that --remove took out; nothing was changed")
            source["excluded"].remove(sha256)
            restored.append(shown)
        return db, [], restored

    sources = committed_sources(paths)
    return _commit_change(paths, change, lock_timeout, sources)[0]


def _removed_content(name: str, sources: list[dict], cache: ScanCache) -> tuple[dict | None, str | None, str]:
    """(the source, the content's hash, the name as shown) of a file or a server song given to --restore."""
    if (song := server_song(name)) is not None:
        address = song[0]
        source = next((s for s in sources if is_server_source(s) and s["path"] == address), None)
        known = cache.files.get(name)  # the build noted every downloaded song's hash
        return source, known[2] if source and known else None, name
    path = Path(name).expanduser().resolve()
    source = source_of(path, sources)
    return source, cache.sha256(path) if source and path.is_file() else None, path.as_posix()
