"""A server's songs: `Song`, and every song listed once, page by page (search3, else the album lists)."""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from music_mood.subsonic.errors import SubsonicAPIError
from music_mood.subsonic.session import SubsonicSession, as_list, version_tuple


@dataclass(frozen=True)
class Song:
    """One song of a server, as its song lists give it (what a build keeps of it)."""

    id: str
    title: str
    artist: str | None = None
    album: str | None = None
    genre: str | None = None
    duration: float | None = None  # seconds
    size: int | None = None  # bytes of the original file, when the server says
    suffix: str | None = None  # the original file's extension: "mp3", "opus", …

    @classmethod
    def from_child(cls, child: Mapping) -> Song:
        """A Song from the API's `Child` element (search3's song, getAlbum's song, getMusicDirectory's child)."""
        def number(key, kind):
            try:
                value = kind(child[key])
            except (KeyError, TypeError, ValueError):
                return None
            return value if value >= 0 else None  # Supysonic says size -1 for a file it cannot see

        return cls(id=str(child["id"]), title=str(child.get("title") or child["id"]),
                   artist=child.get("artist"), album=child.get("album"), genre=child.get("genre"),
                   duration=number("duration", float), size=number("size", int), suffix=child.get("suffix"))


class SongListing(SubsonicSession):
    """The session's song lists (a part of `client.SubsonicClient`)."""

    def iter_songs(self, page_size: int = 500, method: str = "auto") -> Iterator[Song]:
        """Every song of the server, once each, page by page (`page_size` songs or albums a request).

        `method`: "search3" (an empty query, songCount/songOffset), "albums" (getAlbumList2 alphabeticalByName,
        then getAlbum for each album), "folders" (getAlbumList + getMusicDirectory: servers without ID3 lists), or
        "auto": search3 where it answers an empty query with songs, else the album lists.
        """
        if method not in ("auto", "search3", "albums", "folders"):
            raise ValueError(f"unknown listing method {method!r}")
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        if method == "auto":
            method = self.listing_method()
        if method == "search3":
            yield from self._songs_by_search(page_size)
        else:
            yield from self._songs_by_albums(page_size, id3=method == "albums")

    def listing_method(self) -> str:
        """How iter_songs lists this server: "search3" when an empty search3 query answers songs (or the server
        has no albums either), else "albums" (or "folders" for an API older than 1.8, which has no getAlbumList2)."""
        albums = "albums" if version_tuple(self.api_version) >= (1, 8, 0) else "folders"
        try:
            first = self._search_page(0, 1)
        except SubsonicAPIError:
            return albums
        if first:
            return "search3"
        listed = self.call("getAlbumList2" if albums == "albums" else "getAlbumList",
                           {"type": "alphabeticalByName", "size": 1})
        has_albums = bool(as_list((listed.get("albumList2") or listed.get("albumList") or {}).get("album")))
        return albums if has_albums else "search3"

    def _search_page(self, offset: int, count: int) -> list[dict]:
        body = self.call("search3", {"query": "", "songCount": count, "songOffset": offset,
                                     "artistCount": 0, "albumCount": 0})
        return as_list((body.get("searchResult3") or {}).get("song"))

    def _songs_by_search(self, page_size: int) -> Iterator[Song]:
        pages = _pages(lambda offset: self._search_page(offset, page_size), page_size)
        return _once_each(Song.from_child(child) for page in pages for child in page)

    def _songs_by_albums(self, page_size: int, id3: bool) -> Iterator[Song]:
        list_method, list_key = ("getAlbumList2", "albumList2") if id3 else ("getAlbumList", "albumList")

        def albums_at(offset: int) -> list[dict]:
            body = self.call(list_method, {"type": "alphabeticalByName", "size": page_size, "offset": offset})
            return as_list((body.get(list_key) or {}).get("album"))

        return _once_each(Song.from_child(child) for albums in _pages(albums_at, page_size) for album in albums
                          for child in self._album_songs(str(album["id"]), id3))

    def _album_songs(self, album_id: str, id3: bool) -> list[dict]:
        if id3:
            return as_list((self.call("getAlbum", {"id": album_id}).get("album") or {}).get("song"))
        children = as_list((self.call("getMusicDirectory", {"id": album_id}).get("directory") or {}).get("child"))
        return [child for child in children if not child.get("isDir") and not child.get("isVideo")]


def _pages(page_at, page_size: int) -> Iterator[list]:
    """Each page `page_at(offset)` answers, from offset 0, until one comes back shorter than `page_size`."""
    offset = 0
    while True:
        page = page_at(offset)
        yield page
        if len(page) < page_size:
            return
        offset += len(page)


def _once_each(songs: Iterator[Song]) -> Iterator[Song]:
    """The songs, each id once: a server's lists need not be stable from page to page (Supysonic's search3 has no
    ORDER BY), and a song may be on two albums."""
    seen: set[str] = set()
    for song in songs:
        if song.id not in seen:
            seen.add(song.id)
            yield song
