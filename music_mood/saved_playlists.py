"""A result's tracks saved as a playlist where the user listens (save_playlist, for the CLI and the page alike): the
tracks kept as files (the library's own, and later a folder indexed in place) as LIBRARY/playlists/NAME.m3u8; the
answer says what went where, so that a server's songs can later go to a playlist on their server
(subsonic's save_playlist) beside the file.

A playlist is no part of the library's database: saving one takes no library lock and commits nothing. The file
is written whole to a temporary file in playlists/ and renamed into place, so a player reads the old playlist or
the new one. Saving a name again replaces the playlist the product saved under it; a file of that name that the
product did not write (SAVED_MARK, see playlists.saved_under) is the user's and is never written over.
"""
from __future__ import annotations

import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from music_mood.database import Database, UnknownTrackError
from music_mood.playlists import (
    PLAYLIST_SUFFIX,
    PLAYLISTS_FOLDER,
    PlaylistEntry,
    check_playlist_name,
    playlist_path,
    render_m3u8,
    saved_under,
)
from music_mood.storage import crash_point, fsync_dir, write_new_file

FILE = "file"  # where a track lives: a file on this machine (the only kind the library has for now)


class PlaylistError(ValueError):
    """A playlist that cannot be saved: no track, a track whose file is gone, or a place it cannot be written."""


class NotOurPlaylistError(PlaylistError):
    """A file of the playlist's name exists in playlists/ and the product did not write it: it is the user's."""


@dataclass(frozen=True)
class SavedPlaylist:
    """Where a saved playlist went: `file` (the M3U8 written, or None when no track is a file) holding
    `file_tracks` tracks, of the library at `library_root`."""

    name: str
    library_root: Path
    file: Path | None
    file_tracks: int = 0

    @property
    def tracks(self) -> int:
        return self.file_tracks

    @property
    def relative_file(self) -> str | None:
        """The M3U8's path in the library folder, with / (playlists/NAME.m3u8): what a server may tell a visitor."""
        return None if self.file is None else f"{PLAYLISTS_FOLDER}/{self.file.name}"

    def to_dict(self) -> dict:
        """The /save_playlist answer: {"name", "tracks", "saved": [{"to": "m3u8", "file": "playlists/NAME.m3u8",
        "tracks": n}]}, one item per place the tracks went (a server's playlist will be another), naming no path
        of the server."""
        saved = [] if self.file is None else [{"to": "m3u8", "file": self.relative_file, "tracks": self.file_tracks}]
        return {"name": self.name, "tracks": self.tracks, "saved": saved}

    def summary(self) -> str:
        """One line for the command line: where the playlist went and how many tracks it holds."""
        return f"Saved the playlist {self.name!r}: {self.file_tracks} track(s) in {self.file}"


def track_rows(db: Database, tracks: Iterable[str]) -> list[int]:
    """The rows of `tracks` (each a track's id, or its file_path as the library stores it), in order, each once.

    Only names the library itself holds are looked up: no path is resolved on this machine, so a request cannot
    learn anything about files outside the library. UnknownTrackError names the first that is no track."""
    rows, seen = [], set()
    for track in tracks:
        if not isinstance(track, str) or not track.strip():
            raise UnknownTrackError(f"a track is named by its id or its file path in the library, not {track!r}; "
                                    f"no playlist was saved")
        key = track.strip()
        found = sorted(db.rows_with("id", key) + db.rows_with("file_path", key))
        if not found:
            raise UnknownTrackError(f"{key!r} is no track of the library (name a track by its id or by its file "
                                    f"path as the library lists it, e.g. processed_music/calm/x.mp3); no playlist "
                                    f"was saved")
        if found[0] not in seen:
            seen.add(found[0])
            rows.append(found[0])
    return rows


def where_tracks_live(db: Database, rows: list[int]) -> dict[str, list[int]]:
    """`rows` by where each track lives, in order: FILE for a file on this machine. A track of a Subsonic server
    (its record names the server: issue 23, part 2) will be listed under that server, for its save_playlist."""
    where: dict[str, list[int]] = {}
    for row in rows:
        where.setdefault(str(db.tracks[row].get("server") or FILE), []).append(row)
    return where


def playlist_entry(db: Database, row: int) -> PlaylistEntry:
    """The M3U8 entry of the track at `row`: its file, length, artist and title. PlaylistError when the file is
    gone (a playlist entry must lead to the track)."""
    track = db.tracks[row]
    path = db.root / str(track["file_path"])
    if not path.is_file():
        raise PlaylistError(f"the file of {track['file_path']} is missing from the library folder (run python "
                            f"music_to_vector.py to update the library); no playlist was saved")
    duration = track.get("duration_s")
    return PlaylistEntry(path=path, duration_s=float(duration) if isinstance(duration, (int, float)) else None,
                         artist=str(track.get("artist") or "") or None, title=str(track.get("title") or "") or None)


def check_can_save(library_folder: Path, name: str) -> str:
    """`name` checked (PlaylistNameError), when LIBRARY/playlists/NAME.m3u8 is free or a playlist the product saved
    under that name; NotOurPlaylistError when a file there is the user's. Needs no database: the CLI asks it before
    any model loads (save_playlist asks again when it writes)."""
    name = check_playlist_name(name)
    path = playlist_path(library_folder, name)
    if os.path.lexists(path) and not saved_under(path, name):
        raise NotOurPlaylistError(refusal(name))
    return name


def refusal(name: str) -> str:
    return (f"{PLAYLISTS_FOLDER}/{name}{PLAYLIST_SUFFIX} in the library folder is not a playlist this program "
            f"saved (yours, or another program's): it is left as it is; choose another name")


def save_playlist(db: Database, tracks: Iterable[str], name: str) -> SavedPlaylist:
    """Save `tracks` (ids or file paths of `db`'s tracks, in play order; a repeated track is listed once) as the
    playlist `name`: the tracks kept as files go to LIBRARY/playlists/NAME.m3u8 (write_library_playlist).

    Raises PlaylistNameError for a name that cannot be a playlist's, UnknownTrackError for a track the library does
    not hold, PlaylistError when there is no track, a track's file is gone, a track lives where playlists cannot be
    saved yet (a server), or the file cannot be written, and NotOurPlaylistError when the file of that name is the
    user's. On any error nothing is written."""
    name = check_playlist_name(name)
    rows = track_rows(db, tracks)
    if not rows:
        raise PlaylistError("there is no track to save as a playlist")
    where = where_tracks_live(db, rows)
    elsewhere = [place for place in where if place != FILE]
    if elsewhere:
        raise PlaylistError(f"{len(where[elsewhere[0]])} track(s) are songs of {elsewhere[0]}: saving a playlist on "
                            f"a server is not supported yet; no playlist was saved")
    entries = [playlist_entry(db, row) for row in where[FILE]]
    path = write_library_playlist(db.root, name, entries)
    return SavedPlaylist(name=name, library_root=db.root, file=path, file_tracks=len(entries))


def write_library_playlist(library_folder: Path, name: str, entries: list[PlaylistEntry]) -> Path:
    """Write LIBRARY/playlists/NAME.m3u8 (render_m3u8 with the name's mark) atomically and durably; returns its path.

    A new name is linked into place, which fails if a file of that name appeared meanwhile: then, as for a name
    already taken, the file is replaced (renamed over) only when the product saved it under this name, else
    NotOurPlaylistError and nothing is written. A file system without links gets the check, then the rename.
    The temporary file is in playlists/ itself (a rename stays on one file system) and is always removed."""
    name = check_playlist_name(name)
    path = playlist_path(library_folder, name)
    text = render_m3u8(entries, path, name=name).encode("utf-8")
    relative = f"{PLAYLISTS_FOLDER}/{path.name}"
    try:
        path.parent.mkdir(exist_ok=True)
    except OSError as e:
        raise PlaylistError(f"cannot write {relative} in the library folder: {e.strerror or e}") from e
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    try:
        # The umask's mode, as any new file of the user's: a playlist is for their other programs to read.
        write_new_file(tmp, lambda f: f.write(text))
        _put_in_place(tmp, path, name)
        fsync_dir(path.parent)
    except OSError as e:
        raise PlaylistError(f"cannot write {relative} in the library folder: {e.strerror or e}") from e
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _put_in_place(tmp: Path, path: Path, name: str) -> None:
    """Give the written `tmp` the name `path`: a new file, or the product's playlist of `name` replaced."""
    try:
        crash_point(f"link {path.name}")
        os.link(tmp, path)  # atomic, and only where no file is: a user's file that just appeared stays
        return
    except OSError:  # FileExistsError; or no hard links here (FAT, some network shares): check, then rename
        pass
    if os.path.lexists(path) and not saved_under(path, name):
        raise NotOurPlaylistError(refusal(name))
    crash_point(f"rename {path.name}")
    os.replace(tmp, path)
