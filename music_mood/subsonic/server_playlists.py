"""Playlists on the server: list them, read one back (`Playlist`), and save one by name, replacing the user's own
playlist of that name (the M3U8 files on disk are music_mood.playlists)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from music_mood.playlists import check_playlist_name
from music_mood.subsonic.errors import ERROR_NOT_AUTHORIZED, SubsonicAPIError
from music_mood.subsonic.session import SubsonicSession, as_list
from music_mood.subsonic.songs import Song


@dataclass(frozen=True)
class Playlist:
    """A playlist on the server, read back (getPlaylist): its songs in order."""

    id: str
    name: str
    songs: tuple[Song, ...] = ()

    @property
    def song_ids(self) -> list[str]:
        return [song.id for song in self.songs]


class ServerPlaylists(SubsonicSession):
    """The session's playlist calls (a part of `client.SubsonicClient`)."""

    def list_playlists(self) -> list[dict]:
        """The playlists the user sees (getPlaylists): the API's Playlist objects (id, name, owner, songCount)."""
        return as_list((self.call("getPlaylists").get("playlists") or {}).get("playlist"))

    def get_playlist(self, playlist_id: str) -> Playlist:
        """A playlist and its songs in order (getPlaylist)."""
        body = self.call("getPlaylist", {"id": playlist_id}).get("playlist") or {}
        songs = tuple(Song.from_child(entry) for entry in as_list(body.get("entry")))
        return Playlist(id=str(body.get("id", playlist_id)), name=str(body.get("name", "")), songs=songs)

    def _own_playlist_named(self, name: str) -> str | None:
        for playlist in self.list_playlists():
            owner = playlist.get("owner")
            if playlist.get("name") == name and (owner is None or owner == self.server.user):
                return str(playlist["id"])
        return None

    def save_playlist(self, name: str, song_ids: Sequence[str]) -> Playlist:
        """Make the user's playlist `name` hold exactly `song_ids`, in order: the user's existing playlist of that
        name is replaced (never a second one of the same name), else a new one is created. Returns it, read back.

        Replacing uses createPlaylist with playlistId (every API version has it: the songs are replaced); a server
        that refuses it gets updatePlaylist (remove every entry, add the new ones; API 1.8+). The song ids go in the
        URL: a few hundred fit every server's URL limit. A name that cannot be a playlist's is PlaylistNameError
        (playlists.check_playlist_name: one printable line, no path separator)."""
        name = check_playlist_name(name)
        existing = self._own_playlist_named(name)
        songs = [("songId", song_id) for song_id in song_ids]
        if existing is None:
            body = self.call("createPlaylist", [("name", name), *songs])
            created = body.get("playlist")  # API 1.14+ answers the playlist; older ones answer nothing
            playlist_id = str(created["id"]) if created and "id" in created else self._own_playlist_named(name)
            if playlist_id is None:
                raise SubsonicAPIError(f"{self.server}: the playlist {name!r} was created but is not listed")
            return self.get_playlist(playlist_id)
        try:
            self.call("createPlaylist", [("playlistId", existing), *songs])
        except SubsonicAPIError as e:
            if e.code == ERROR_NOT_AUTHORIZED:
                raise
            self.replace_playlist_songs(existing, song_ids)
        return self.get_playlist(existing)

    def replace_playlist_songs(self, playlist_id: str, song_ids: Sequence[str]) -> None:
        """Replace a playlist's songs with updatePlaylist: remove every entry (by index), add `song_ids`."""
        current = self.get_playlist(playlist_id)
        self.call("updatePlaylist", [("playlistId", playlist_id),
                                     *(("songIndexToRemove", i) for i in range(len(current.songs))),
                                     *(("songIdToAdd", song_id) for song_id in song_ids)])
