"""The listed tracks' files as a build finds them: a file found again at another place (the record follows it),
a new_music/ file's place in processed_music/, and the tracks whose file (or server song) is gone."""
from __future__ import annotations

import os
from pathlib import Path

from music_mood.audio import file_tags, read_tags
from music_mood.library import LibraryPaths
from music_mood.remote import is_server_source, is_server_track
from music_mood.sources import library_path, source_of
from music_mood.storage import move_obstacle

TAG_KEYS = ("title", "artist", "genre", "mood")


def destination(source: Path, paths: LibraryPaths, taken: set[Path]) -> Path:
    """Where a file from new_music/ goes in processed_music/: same sub-folders, never over another file."""
    target = paths.processed_music / source.relative_to(paths.new_music)
    stem, n = target.stem, 2
    while os.path.lexists(target) or target in taken:
        target = target.with_name(f"{stem} ({n}){target.suffix}")
        n += 1
    return target


def found_again(record: dict, path: Path, paths: LibraryPaths, report, moves: list,
                 taken: set[Path], sources: list[dict] = ()) -> None:
    """A file whose content the library lists as `record`: a copy (left alone: a duplicate is never a second
    track), the listed file moved or renamed by hand inside processed_music/ or a source (the record follows it),
    or a file a crashed run had not moved yet (a new_music/ file of a source track gone goes to processed_music/:
    nothing is ever moved into a source)."""
    listed = paths.root / record["file_path"]
    source = source_of(path, sources)
    if is_server_track(record) or os.path.lexists(listed) or listed in taken:
        report.duplicates.append((path, record["file_path"]))
    elif path.is_relative_to(paths.processed_music) or source is not None or record.get("source"):
        if path.is_relative_to(paths.new_music):
            target = destination(path, paths, taken)
            moves.append((path, target))
            path, source = target, None
        old_path, folder = record["file_path"], Path(source["path"]) if source else paths.processed_music
        tags = file_tags(path) if path.exists() else {}
        was = record.get("from_file") or read_tags(listed, folder, tags)
        now = read_tags(path, folder, tags)
        for key in TAG_KEYS:  # what came from the old name or folder follows the file; a hand edit stays
            if record.get(key) == was.get(key):
                record[key] = now[key]
        record["from_file"] = now
        record["file_path"] = library_path(path, paths)
        record.pop("source", None)
        if source is not None:
            record["source"] = source["path"]
        taken.add(path)
        report.relocated.append((old_path, record["file_path"]))
    elif (obstacle := move_obstacle(path, listed)) is not None:
        report.failed.append((path, f"cannot move it to {listed}: {obstacle}"))
    else:
        moves.append((path, listed))
        taken.add(listed)


def tracks_still_there(tracks: list[dict], paths: LibraryPaths, taken: set[Path], report,
                        sources: list[dict] = (), songs: dict[int, bool] | None = None) -> list[int]:
    """The rows whose file is there (or about to be moved there); the others are named in report.dropped.

    When no listed file at all is there, the library folder is more likely wrong (another --library, a drive not
    mounted) than every file deleted: nothing is dropped and a warning says so; likewise for each source's tracks
    (a NAS not mounted, a folder not reachable), and the tracks of a source no longer registered are dropped.
    A server track is there when `songs` (server_sources.songs_still_there) says its song is, or when its server was
    not listed by this run.
    """
    songs = songs or {}
    there = [songs.get(i, True) if is_server_track(t) else
             os.path.lexists(paths.root / t["file_path"]) or paths.root / t["file_path"] in taken
             for i, t in enumerate(tracks)]
    registered = {s["path"] for s in sources}
    for where in {t.get("source") or "" for t in tracks}:
        rows = {i for i, t in enumerate(tracks) if (t.get("source") or "") == where}
        if where and where not in registered:
            there = [ok and i not in rows for i, ok in enumerate(there)]
        elif not any(there[i] for i in rows):
            report.warnings.append(_none_there_warning(len(rows), where, paths, sources))
            there = [ok or i in rows for i, ok in enumerate(there)]
    report.dropped += [t["file_path"] for t, ok in zip(tracks, there) if not ok]
    return [i for i, ok in enumerate(there) if ok]


def _none_there_warning(count: int, where: str, paths: LibraryPaths, sources: list[dict]) -> str:
    if any(s["path"] == where and is_server_source(s) for s in sources):
        return (f"Warning: none of the {count} tracks of {where} is on that server now; is it the right server, "
                f"or is it still scanning its music? The database is left as it is.")
    return (f"Warning: none of the {count} tracks' files is in {where or paths.root}; is the "
            f"{'source' if where else 'library'} folder right? The database is left as it is.")
