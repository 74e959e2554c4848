"""A result's tracks saved as a playlist where the user listens (save_playlist, for the CLI and the page alike): the
tracks kept as files (the library's own, and those of a folder indexed in place) as LIBRARY/playlists/NAME.m3u8,
and the songs of a Subsonic server as a playlist NAME on that server (one per server); the answer says which
tracks went where, and which server failed.

A playlist is no part of the library's database: saving one takes no library lock and commits nothing. The file
is written whole to a temporary file in playlists/ and renamed into place, so a player reads the old playlist or
the new one. Saving a name again replaces the playlist the product saved under it; a file of that name that the
product did not write (SAVED_MARK, see playlists.saved_under) is the user's and is never written over. On a server,
the user's playlist of that name is updated, never doubled (subsonic's save_playlist).
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
from music_mood.remote import ServerConnections, is_server_track
from music_mood.storage import crash_point, fsync_dir, write_new_file
from music_mood.subsonic import SubsonicError

FILE = "file"  # where a track lives: a file on this machine; else the address of its server (its "source")


class PlaylistError(ValueError):
    """A playlist that cannot be saved: no track, a track whose file is gone, or a place it cannot be written."""


class NotOurPlaylistError(PlaylistError):
    """A file of the playlist's name exists in playlists/ and the product did not write it: it is the user's."""


@dataclass(frozen=True)
class ServerPart:
    """The songs of one server in a saved playlist: `song_ids` in order and their titles; `playlist_id` of the
    playlist made or updated on `server` (its address), or `error` (one line) when the server failed."""

    server: str
    song_ids: tuple[str, ...]
    titles: tuple[str, ...]
    playlist_id: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class SavedPlaylist:
    """Where a saved playlist went: `file` (the M3U8 written, or None when no track is a file) holding
    `file_tracks` tracks (titled `file_titles`), of the library at `library_root`; and `servers`, one part per
    server whose songs were in it, each saved or failed."""

    name: str
    library_root: Path
    file: Path | None
    file_tracks: int = 0
    file_titles: tuple[str, ...] = ()
    servers: tuple[ServerPart, ...] = ()

    @property
    def tracks(self) -> int:
        """How many tracks were saved (the failed servers' songs are not)."""
        return self.file_tracks + sum(len(part.song_ids) for part in self.servers if part.error is None)

    @property
    def failed(self) -> list[ServerPart]:
        return [part for part in self.servers if part.error is not None]

    @property
    def relative_file(self) -> str | None:
        """The M3U8's path in the library folder, with / (playlists/NAME.m3u8): what a server may tell a visitor."""
        return None if self.file is None else f"{PLAYLISTS_FOLDER}/{self.file.name}"

    def to_dict(self) -> dict:
        """The /save_playlist answer: {"name", "tracks", "saved": [...], "failed": [...]}, naming no path of this
        machine. "saved" has one item per place the tracks went: {"to": "m3u8", "file": "playlists/NAME.m3u8",
        "tracks": n, "titles"} and {"to": "subsonic", "server": its address, "playlist_id", "tracks", "titles"};
        "failed" one per server that failed: {"to": "subsonic", "server", "tracks", "titles", "error"}."""
        saved = [] if self.file is None else [{"to": "m3u8", "file": self.relative_file, "tracks": self.file_tracks,
                                               "titles": list(self.file_titles)}]
        failed = []
        for part in self.servers:
            item = {"to": "subsonic", "server": part.server, "tracks": len(part.song_ids), "titles": list(part.titles)}
            if part.error is None:
                saved.append({**item, "playlist_id": part.playlist_id})
            else:
                failed.append({**item, "error": part.error})
        return {"name": self.name, "tracks": self.tracks, "saved": saved, "failed": failed}

    def summary(self) -> str:
        """For the command line: one line per place the playlist went, with how many tracks; when they went to
        more than one place, each line lists its tracks' titles. The failed servers are problems(), not here."""
        several = (self.file is not None) + len(self.servers) > 1
        lines = []
        if self.file is not None:
            lines.append(f"Saved the playlist {self.name!r}: {self.file_tracks} track(s) in {self.file}"
                         + _listed(self.file_titles, several))
        for part in self.servers:
            if part.error is None:
                lines.append(f"Saved the playlist {self.name!r}: {len(part.song_ids)} track(s) on the server "
                             f"{part.server}" + _listed(part.titles, several))
        return "\n".join(lines)

    def problems(self) -> list[str]:
        """One line per server that failed: which tracks were not saved there, why, and what was saved anyway."""
        kept = f"; the other tracks were saved in {self.file}" if self.file is not None else ""
        return [f"the playlist {self.name!r} was not saved on the server {part.server} ({len(part.song_ids)} "
                f"track(s): {', '.join(part.titles)}): {part.error}{kept}" for part in self.failed]


def _listed(titles: Iterable[str], show: bool) -> str:
    return f": {', '.join(titles)}" if show else ""


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
    """`rows` by where each track lives, in order: FILE for a file on this machine, else its server's address (the
    track's "source", remote.is_server_track)."""
    where: dict[str, list[int]] = {}
    for row in rows:
        track = db.tracks[row]
        where.setdefault(str(track["source"]) if is_server_track(track) else FILE, []).append(row)
    return where


def track_title(track: dict) -> str:
    """How a saved playlist names a track to the user: "artist - title", or its file's name."""
    title = str(track.get("title") or "") or Path(str(track["file_path"])).name
    return f"{track['artist']} - {title}" if track.get("artist") else title


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


def save_playlist(db: Database, tracks: Iterable[str], name: str,
                  servers: ServerConnections | None = None) -> SavedPlaylist:
    """Save `tracks` (ids or file paths of `db`'s tracks, in play order; a repeated track is listed once) as the
    playlist `name`: the tracks kept as files go to LIBRARY/playlists/NAME.m3u8 (write_library_playlist), the songs
    of each Subsonic server to the playlist `name` on that server, in the same order (through `servers`, else
    connections made for this call). The answer says which tracks went where.

    Raises PlaylistNameError for a name that cannot be a playlist's, UnknownTrackError for a track the library does
    not hold, PlaylistError when there is no track, a track's file is gone, or the file cannot be written, and
    NotOurPlaylistError when the file of that name is the user's: on these nothing is written. The file goes first;
    a server that fails then is one line in the answer's problems(), the file and the other servers saved still
    (PlaylistError when no part at all could be saved)."""
    name = check_playlist_name(name)
    rows = track_rows(db, tracks)
    if not rows:
        raise PlaylistError("there is no track to save as a playlist")
    where = where_tracks_live(db, rows)
    entries = [playlist_entry(db, row) for row in where.get(FILE, [])]
    on_servers = {server: server_rows for server, server_rows in where.items() if server != FILE}
    # The file first: its refusals (the user's file of that name, a folder that cannot be written) leave the
    # servers untouched too.
    path = write_library_playlist(db.root, name, entries) if entries else None
    own = servers is None and on_servers
    servers = ServerConnections() if own else servers
    try:
        parts = tuple(save_on_server(servers, server, name, [db.tracks[row] for row in server_rows])
                      for server, server_rows in on_servers.items())
    finally:
        if own:
            servers.close()
    saved = SavedPlaylist(name=name, library_root=db.root, file=path, file_tracks=len(entries),
                          file_titles=tuple(track_title(db.tracks[row]) for row in where.get(FILE, [])),
                          servers=parts)
    if path is None and len(saved.failed) == len(parts):
        raise PlaylistError(f"{saved.problems()[0]}; no playlist was saved")
    return saved


def save_on_server(servers: ServerConnections, server: str, name: str, tracks: list[dict]) -> ServerPart:
    """The songs `tracks` of the server at `server`, saved as its playlist `name` in this order (a playlist of that
    name the user has there is updated). A server that fails is the part's error, one line; its connection is
    dropped, so that the next save connects again."""
    song_ids = tuple(str(track["song_id"]) for track in tracks)
    titles = tuple(track_title(track) for track in tracks)
    try:
        playlist = servers.client(server).save_playlist(name, song_ids)
    except SubsonicError as e:
        servers.forget(server)
        return ServerPart(server, song_ids, titles, error=str(e))
    return ServerPart(server, song_ids, titles, playlist_id=playlist.id)


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
