"""A library some of whose tracks are songs of a real Supysonic (tests/subsonic_server.py), for the tests of what is
done with server tracks before the build of them exists: the built library's records of the very files the server
holds are turned into server records by hand, in remote.py's format (source, song_id, file_path, album), and
committed through the product's own commit (conftest.store_as_table). Their files are removed from the library
folder, so that nothing can play them but their server."""
from __future__ import annotations

from pathlib import Path

from music_mood.library import LibraryPaths, load_database
from music_mood.remote import SERVER_KIND, server_file_path
from music_mood.sources import committed_sources
from music_mood.subsonic import connect, parse_server
from tests.conftest import store_as_table
from tests.subsonic_server import Supysonic, start_supysonic

USER = "carol"
PASSWORD = "cörrect horse & battery #9"  # shared by every server of these tests: one MUSIC_MOOD_SUBSONIC_PASSWORD
SERVER_GENRE = "Serverwave"  # the genre of every server song: a --genre filter keeps a plan to them


def start_server(folder: Path, files: list[Path], album: str) -> Supysonic:
    """A running Supysonic holding copies of `files`, titled "<album> <n>" and of genre SERVER_GENRE."""
    tags = [{"title": f"{album} {n}", "artist": f"{album} Band", "album": album, "genre": SERVER_GENRE}
            for n, _ in enumerate(files, 1)]
    return start_supysonic(folder, USER, PASSWORD, list(zip(files, tags)))


def move_to_servers(library: Path, servers: list[Supysonic]) -> dict[str, dict]:
    """Turn the library's records of the files each server holds into records of that server's songs (found by
    the server's own song list), committed with the servers registered as sources, in this order (as a build of
    them commits them); their files are removed. Returns the new records by file_path."""
    by_name = {}
    for server in servers:
        with connect(parse_server(server.url), PASSWORD) as client:
            songs = {song.title: song for song in client.iter_songs()}
        for track in server.tracks:
            by_name[track.path.name] = (server, track, songs[track.title].id)
    moved = {}

    def change(records: list[dict]) -> None:
        for record in records:
            found = by_name.get(Path(record["file_path"]).name)
            if found is None:
                continue
            server, track, song_id = found
            (library / record["file_path"]).unlink()
            record.update(source=server.url, song_id=song_id, file_path=server_file_path(server.url, song_id),
                          title=track.title, artist=track.artist, album=track.album, genre=track.genre)
            moved[record["file_path"]] = dict(record)

    added = [{"kind": SERVER_KIND, "path": server.url, "added": "2026-12-01T10:00:00+0000", "excluded": []}
             for server in servers]
    store_as_table(library, table=False, change=change, sources=[*committed_sources(LibraryPaths.at(library)), *added])
    assert len(moved) == len(by_name), "every server file is a track of the library"
    return moved


def server_rows(library: Path) -> tuple[list[int], list[int]]:
    """(rows of server songs, rows of files) of the library as committed."""
    db = load_database(LibraryPaths.at(library))
    on_server = [row for row, track in enumerate(db.tracks) if track.get("song_id")]
    return on_server, [row for row in range(len(db.tracks)) if row not in on_server]
