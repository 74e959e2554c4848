"""A Subsonic server as a library source, for the builder: registering it, listing its songs, and reading each new
song (downloaded into memory, decoded from there, never written to disk) so that build.py embeds it like a file.

The records are remote.py's. What a build does with a server (build.py calls these):
- before anything else, `list_server_songs` lists every registered server's songs page by page (songs.iter_songs);
  a server that cannot be listed (down, wrong password) stops the run with one line and changes nothing: a build
  that went on would drop that server's tracks as gone;
- `new_songs` gives the songs not in the library yet, as `ServerSong`s among the builder's candidates;
- `read_song` (the builder's prefetch thread, so downloads overlap embedding) gives a DecodedTrack, or a
  KnownFile when the content is already in the library or was taken out by --remove; the scan cache keeps each
  song's content hash (by its file_path and size), so a song is downloaded once, even a duplicate;
- `server_record` makes the record; `songs_still_there` says which server tracks the listing still has.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from music_mood.audio import DecodedTrack, KnownFile, decode_audio, file_tags, read_rhythm
from music_mood.remote import SERVER_KIND, ServerConnections, is_server_source, is_server_track, server_file_path
from music_mood.subsonic import (
    ServerAddressError,
    Song,
    SubsonicError,
    SubsonicServer,
    connect,
    parse_server,
    password_for,
)


def is_server_address(text: str) -> bool:
    """Whether a --add-source/--remove-source argument names a server (http:// or https://) rather than a folder."""
    return text.strip().lower().startswith(("http://", "https://"))


def check_new_server(address: str, sources: list[dict]) -> SubsonicServer:
    """The server to register; ServerAddressError (a ValueError, one line) when the address is not one or the
    server is already a source."""
    server = parse_server(address)
    if any(s["path"] == str(server) for s in sources):
        raise ServerAddressError(f"{server} is already a source")
    return server


def log_in(server: SubsonicServer, interactive: bool = True) -> str:
    """The server's password, checked by logging in: SubsonicError (wrong password, server down) else."""
    password = password_for(server, interactive=interactive)
    connect(server, password).close()
    return password


def new_server_source(server: SubsonicServer) -> dict:
    return {"kind": SERVER_KIND, "path": str(server), "added": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "excluded": []}


@dataclass(frozen=True)
class ServerSong:
    """A song of a registered server that the build reads: its source's address and the song as listed."""

    address: str
    song: Song

    @property
    def file_path(self) -> str:
        return server_file_path(self.address, self.song.id)

    @property
    def name(self) -> str:
        return f"{self.song.title} ({self.file_path})"

    def __str__(self) -> str:
        return self.name


def list_server_songs(servers: ServerConnections, sources: list[dict]) -> dict[str, list[Song]]:
    """Every song of every registered server, by its address. Raises SubsonicError naming the server when one
    cannot be listed (the run stops there, before any change)."""
    listed = {}
    for source in filter(is_server_source, sources):
        try:
            listed[source["path"]] = list(servers.client(source["path"]).iter_songs())
        except SubsonicError as e:
            servers.forget(source["path"])
            raise SubsonicError(f"cannot list the songs of {source['path']}: {e}; nothing was changed, the next run "
                                "tries again") from None
    return listed


def new_songs(listed: dict[str, list[Song]], listed_paths: set[str]) -> list[ServerSong]:
    """The songs not in the library yet (by their file_path)."""
    return [ServerSong(address, song) for address, songs in listed.items() for song in songs
            if server_file_path(address, song.id) not in listed_paths]


def read_song(servers: ServerConnections, item: ServerSong, sample_rate: int, known, skipped: set[str],
              cache) -> DecodedTrack | KnownFile:
    """Download one song into memory, hash it and, unless its content is in `known` (the library's hashes) or
    `skipped` (taken out by --remove), decode it and estimate its tempo. A song whose hash the scan cache holds for
    its size is not downloaded again when that hash is known or skipped."""
    size = item.song.size if item.song.size is not None else -1
    cached = cache.files.get(item.file_path)
    if cached and cached[0] == size and (cached[2] in known or cached[2] in skipped):
        return KnownFile(source=item, sha256=cached[2])
    song = servers.song_audio({"source": item.address, "song_id": item.song.id, "title": item.song.title})
    sha256 = hashlib.sha256(song.data).hexdigest()
    cache.remember(item.file_path, size, None, sha256)
    if sha256 in known or sha256 in skipped:
        return KnownFile(source=item, sha256=sha256)
    audio = decode_audio(song, sample_rate)
    return DecodedTrack(source=item, sha256=sha256, audio=audio, sample_rate=sample_rate,
                        tags={**server_tags(item.song), "mood": file_tags(song).get("mood", "")},
                        **read_rhythm(audio, sample_rate))


def server_tags(song: Song) -> dict:
    """title/artist/genre as the server lists them."""
    return {"title": song.title, "artist": song.artist or "", "genre": song.genre or ""}


def server_record(record: dict, item: ServerSong) -> dict:
    """A new track's record (build._new_record's) made a server track's: its source, song id, album and size."""
    record.update(file_path=item.file_path, source=item.address, song_id=item.song.id,
                  album=item.song.album or "", size=item.song.size)
    return record


def follow_song(record: dict, item: ServerSong, listed: dict[str, list[Song]]) -> bool:
    """A server track whose content came back under another song id of the same server (servers give new ids
    after a rescan) follows it when its old id is gone; True when it did."""
    if record.get("source") != item.address or song_listed(record, listed):
        return False
    record.update(file_path=item.file_path, song_id=item.song.id, album=item.song.album or "", size=item.song.size)
    now = server_tags(item.song)
    was = record.get("from_file") or {}
    for key, value in now.items():  # what came from the server follows the song; a hand edit stays
        if record.get(key) == was.get(key):
            record[key] = value
    record["from_file"] = {**was, **now}
    return True


def song_listed(record: dict, listed: dict[str, list[Song]]) -> bool:
    """Whether a server track's song is in its server's listing of this run."""
    return any(song.id == record.get("song_id") for song in listed.get(record.get("source"), ()))


def songs_still_there(tracks: list[dict], listed: dict[str, list[Song]]) -> dict[int, bool]:
    """For each server track (by row) of a listed server: whether its song is still on the server."""
    ids = {address: {song.id for song in songs} for address, songs in listed.items()}
    return {i: t.get("song_id") in ids[t["source"]] for i, t in enumerate(tracks)
            if is_server_track(t) and t.get("source") in ids}
