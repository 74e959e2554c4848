"""Results saved where people listen: recommend.py --save-playlist and the page's /save_playlist write
LIBRARY/playlists/NAME.m3u8 of real tracks, read back with a real parser (the `m3u8` package); a name saved again
is replaced, a user's own file of that name is never written over, and bad names and forged requests are refused
with nothing written."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import m3u8
import pytest

import recommend as recommend_cli
from music_mood.database import UnknownTrackError
from music_mood.library import LibraryPaths, load_database
from music_mood.playlists import SAVED_MARK, PlaylistNameError
from music_mood.saved_playlists import (
    NotOurPlaylistError,
    PlaylistError,
    save_playlist,
    track_title,
    write_library_playlist,
)
from tests.app_server import free_port
from tests.conftest import store_as_table


def read_back(playlist: Path) -> list[tuple[Path, float, str]]:
    """Each entry as the m3u8 parser reads it: the file it names, resolved from the playlist's folder as players
    do; its duration and title."""
    parsed = m3u8.load(str(playlist))
    return [(Path(playlist.parent, segment.uri), segment.duration, segment.title) for segment in parsed.segments]


def assert_lists(playlist: Path, library: Path, file_paths: list[str]) -> None:
    """`playlist` lists exactly the library's tracks at `file_paths`, in order, each entry leading to its file."""
    db = load_database(LibraryPaths.at(library))
    entries = read_back(playlist)
    assert len(entries) == len(file_paths)
    for (resolved, duration, title), file_path in zip(entries, file_paths):
        assert resolved.is_file() and resolved.samefile(library / file_path)
        track = db.tracks[db.row_of_file(file_path)]
        assert duration == round(track["duration_s"])
        assert title.endswith(track["title"])
    text = playlist.read_text(encoding="utf-8")
    assert text.startswith("#EXTM3U\n") and "file://" not in text


def playlists_folder(library: Path) -> dict[str, bytes]:
    folder = library / "playlists"
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())} if folder.exists() else {}


def _cli(call_cli, checkpoints, *args):
    return call_cli(recommend_cli.main, *args, "--blip-model", checkpoints["blip"], "--clap-model",
                    checkpoints["clap"])


# ---------------------------------------------------------------------------------------------- the CLI


def test_cli_saves_the_results_as_a_playlist_every_entry_resolves(library_copy, checkpoints, photos, call_cli):
    name = "Café ☕ mix: Sunday"
    done = _cli(call_cli, checkpoints, photos["coffee.png"], "--topk", "3", "--json", "--save-playlist", name)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)  # stdout is the results alone: one JSON line
    playlist = library_copy / "playlists" / f"{name}.m3u8"
    assert done.stderr.strip().splitlines() == [f"Saved the playlist {name!r}: 3 track(s) in {playlist}"]
    assert_lists(playlist, library_copy, [track["file_path"] for track in result["results"]])
    assert list(playlists_folder(library_copy)) == [playlist.name]
    assert playlist.read_text(encoding="utf-8").splitlines()[:3] == [  # the title players show, and the mark
        "#EXTM3U", f"#PLAYLIST:{name}", SAVED_MARK.format(name=name)]


def test_several_photos_make_one_playlist_of_their_tracks_in_order_each_once(library_copy, checkpoints, photos,
                                                                             call_cli):
    done = _cli(call_cli, checkpoints, photos["coffee.png"], photos["rocket.jpg"], "--topk", "4", "--json",
                "--save-playlist", "two photos")
    assert done.returncode == 0, done.stderr
    listed = [track["file_path"] for line in done.stdout.splitlines() for track in json.loads(line)["results"]]
    expected = list(dict.fromkeys(listed))
    assert len(listed) == 8 and len(expected) < 8  # six tracks in the library: the photos share some
    assert_lists(library_copy / "playlists" / "two photos.m3u8", library_copy, expected)


@pytest.mark.parametrize("query", ["like", "text"])
def test_like_and_text_runs_save_their_results(library_copy, checkpoints, call_cli, query):
    db = load_database(LibraryPaths.at(library_copy))
    args = ["--like", db.tracks[0]["file_path"]] if query == "like" else ["--text", "slow piano"]
    done = _cli(call_cli, checkpoints, *args, "--topk", "3", "--json", "--save-playlist", query)
    assert done.returncode == 0, done.stderr
    results = [track["file_path"] for track in json.loads(done.stdout)["results"]]
    assert_lists(library_copy / "playlists" / f"{query}.m3u8", library_copy, results)


def test_a_soundtrack_saves_its_tracks_in_play_order(library_copy, checkpoints, photos, call_cli):
    album = [photos[name] for name in ("coffee.png", "chelsea.png", "rocket.jpg", "astronaut.png")]
    done = _cli(call_cli, checkpoints, *album, "--soundtrack", "--json", "--save-playlist", "trip")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    played = [piece["file_path"] for scene in plan["scenes"] for piece in scene["pieces"]]
    assert_lists(library_copy / "playlists" / "trip.m3u8", library_copy, list(dict.fromkeys(played)))


def test_the_same_name_again_replaces_the_playlist(library_copy, checkpoints, call_cli):
    for text in ("slow piano", "energetic drums and guitar"):
        done = _cli(call_cli, checkpoints, "--text", text, "--topk", "2", "--json", "--save-playlist", "Mix")
        assert done.returncode == 0, done.stderr
    assert list(playlists_folder(library_copy)) == ["Mix.m3u8"]  # one file, no temporary one left
    last = [track["file_path"] for track in json.loads(done.stdout)["results"]]
    assert_lists(library_copy / "playlists" / "Mix.m3u8", library_copy, last)


def users_files(library: Path, name: str) -> dict[str, bytes]:
    """What a user may keep in playlists/: a hand-made playlist named `name`, and a copy of a saved one under
    another name (the product's mark and all), which is theirs too."""
    folder = library / "playlists"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.m3u8").write_text("#EXTM3U\n#EXTINF:10,Me - Mine\n/music/mine.flac\n", encoding="utf-8")
    write_library_playlist(library, "original", [])
    (folder / "original.m3u8").rename(folder / f"{name} copy.m3u8")
    return playlists_folder(library)


@pytest.mark.parametrize("which", ["hand-made", "copy"])
def test_a_users_own_file_of_that_name_is_refused_before_the_models_and_left_as_it_is(library_copy, photos,
                                                                                      call_cli, tmp_path, which):
    before = users_files(library_copy, "Mine")
    name = "Mine" if which == "hand-made" else "Mine copy"
    # Models that cannot load: only a check made before loading them can give this message.
    done = call_cli(recommend_cli.main, photos["coffee.png"], "--save-playlist", name, "--blip-model",
                    tmp_path / "nope", "--clap-model", tmp_path / "nope")
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.strip().splitlines() == [
        (f"Error: --save-playlist: playlists/{name}.m3u8 in the library folder is not a playlist this program "
         f"saved (yours, or another program's): it is left as it is; choose another name")]
    assert playlists_folder(library_copy) == before


@pytest.mark.parametrize("name, says", [
    ("two\nlines", "one line of printable text"), ("../x", "cannot hold / or \\"), ("a" * 1000, "at most 100"),
    ("", "needs a name"), (".hidden", "cannot start with a dot"),
])
def test_a_bad_name_is_one_line_before_the_models_and_nothing_is_written(library_copy, photos, call_cli, tmp_path,
                                                                         name, says):
    done = call_cli(recommend_cli.main, photos["coffee.png"], "--save-playlist", name, "--blip-model",
                    tmp_path / "nope", "--clap-model", tmp_path / "nope")
    assert (done.returncode, done.stdout) == (2, "")
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("Error: --save-playlist: a playlist") and says in line
    assert not (library_copy / "playlists").exists() and not (library_copy.parent / "x.m3u8").exists()


# ---------------------------------------------------------------------------------------------- the core


def test_a_user_file_that_appears_before_the_write_is_not_written_over(library_copy):
    """The check before the models is not the only one: the write itself refuses, and leaves no temporary file."""
    db = load_database(LibraryPaths.at(library_copy))
    folder = library_copy / "playlists"
    folder.mkdir()
    (folder / "late.m3u8").write_bytes(b"mine")
    with pytest.raises(NotOurPlaylistError):
        save_playlist(db, [db.tracks[0]["id"]], "late")
    assert playlists_folder(library_copy) == {"late.m3u8": b"mine"}


def test_a_link_of_that_name_is_not_followed_or_replaced(library_copy, tmp_path):
    db = load_database(LibraryPaths.at(library_copy))
    target = tmp_path / "elsewhere.m3u8"
    write_library_playlist(tmp_path, "elsewhere", [])  # a playlist the product saved, reached through a link
    (tmp_path / "playlists" / "elsewhere.m3u8").rename(target)
    before = target.read_bytes()
    (library_copy / "playlists").mkdir()
    (library_copy / "playlists" / "elsewhere.m3u8").symlink_to(target)
    with pytest.raises(NotOurPlaylistError):
        save_playlist(db, [db.tracks[0]["id"]], "elsewhere")
    assert target.read_bytes() == before and (library_copy / "playlists" / "elsewhere.m3u8").is_symlink()


def test_tracks_are_named_as_the_library_lists_them_only(library_copy):
    db = load_database(LibraryPaths.at(library_copy))
    first = db.tracks[0]
    saved = save_playlist(db, [first["id"], db.tracks[1]["file_path"], first["file_path"]], "by id")
    assert saved.to_dict() == {"name": "by id", "tracks": 2, "failed": [],
                               "saved": [{"to": "m3u8", "file": "playlists/by id.m3u8", "tracks": 2,
                                          "titles": [track_title(first), track_title(db.tracks[1])]}]}
    for forged in (str(library_copy / first["file_path"]), f"processed_music/../{first['file_path']}",
                   "../../etc/passwd", "/etc/passwd", "no-such-id"):
        with pytest.raises(UnknownTrackError, match="is no track of the library"):
            save_playlist(db, [first["id"], forged], "forged")
    with pytest.raises(PlaylistError, match="no track to save"):
        save_playlist(db, [], "empty")
    with pytest.raises(PlaylistNameError):
        save_playlist(db, [first["id"]], "../up")
    assert list(playlists_folder(library_copy)) == ["by id.m3u8"]


def test_a_track_whose_file_is_gone_saves_nothing(library_copy):
    db = load_database(LibraryPaths.at(library_copy))
    (library_copy / db.tracks[1]["file_path"]).unlink()
    with pytest.raises(PlaylistError, match="is missing from the library folder"):
        save_playlist(db, [db.tracks[0]["id"], db.tracks[1]["id"]], "gone")
    assert playlists_folder(library_copy) == {}


# ---------------------------------------------------------------------------------------------- the API


@pytest.fixture(scope="module")
def api_library(built_library, tmp_path_factory) -> Path:
    library = tmp_path_factory.mktemp("save-playlist-app") / "library"
    shutil.copytree(built_library, library)
    return library


@pytest.fixture(scope="module")
def client(api_library, checkpoints):
    """The page served in this process (no model is needed to save a playlist), and a gradio_client of it."""
    from gradio_client import Client

    from music_mood.live import LiveLibrary
    from music_mood.models import BackgroundModels
    from music_mood.web.page import build_app

    demo = build_app(LiveLibrary(LibraryPaths.at(api_library), checkpoints["clap"]),
                     BackgroundModels(checkpoints["blip"], checkpoints["clap"]))  # never loaded here
    demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                ssr_mode=False)
    try:
        yield Client(demo.local_url, verbose=False)
    finally:
        demo.close(verbose=False)


def test_save_playlist_api_saves_library_tracks_and_answers_the_relative_path(client, api_library):
    db = load_database(LibraryPaths.at(api_library))
    tracks = [db.tracks[2]["id"], db.tracks[0]["file_path"], db.tracks[4]["id"]]
    answer = client.predict("Évening ♪", tracks, api_name="/save_playlist")
    assert answer == {"name": "Évening ♪", "tracks": 3, "failed": [],
                      "saved": [{"to": "m3u8", "file": "playlists/Évening ♪.m3u8", "tracks": 3,
                                 "titles": [track_title(db.tracks[i]) for i in (2, 0, 4)]}]}
    assert str(api_library) not in json.dumps(answer)
    assert_lists(api_library / "playlists" / "Évening ♪.m3u8", api_library,
                 [db.tracks[i]["file_path"] for i in (2, 0, 4)])
    again = client.predict("Évening ♪", [db.tracks[1]["id"]], api_name="/save_playlist")
    assert again["tracks"] == 1 and "Évening ♪.m3u8" in os.listdir(api_library / "playlists")
    assert_lists(api_library / "playlists" / "Évening ♪.m3u8", api_library, [db.tracks[1]["file_path"]])


def forged_requests(library: Path, track: dict) -> list[tuple[object, object, str]]:
    """(name, tracks, what the refusal says) of requests no page sends."""
    outside = library.parent / "outside.opus"
    shutil.copyfile(library / track["file_path"], outside)
    return [
        ("forged", [str(outside)], "is no track of the library"),
        ("forged", ["../../etc/passwd"], "is no track of the library"),
        ("forged", [str(library / track["file_path"])], "is no track of the library"),
        ("forged", [track["id"], "0123456789abcdef"], "is no track of the library"),
        ("forged", {"path": "/etc/passwd"}, "not an uploaded file"),  # the page's guard of every request
        ("forged", {"ids": [track["id"]]}, "list of track ids or file paths"),
        ("forged", [track["id"], 7], "list of track ids or file paths"),
        ("forged", ["x" * 5000], "at most 4096 characters"),
        ("two\nlines", [track["id"]], "Playlist name: a playlist name is one line"),
        ("../../../tmp/evil", [track["id"]], "cannot hold / or \\"),
        ("n" * 1000, [track["id"]], "at most 100 characters"),
        ("", [track["id"]], "needs a name"),
    ]


def test_forged_requests_are_refused_and_nothing_is_written(client, api_library):
    from gradio_client.exceptions import AppError

    db = load_database(LibraryPaths.at(api_library))
    folder = api_library / "playlists"
    folder.mkdir(exist_ok=True)
    (folder / "Mine.m3u8").write_bytes(b"#EXTM3U\n/music/mine.flac\n")
    requests = [*forged_requests(api_library, db.tracks[0]),
                ("Mine", [db.tracks[0]["id"]], "playlists/Mine.m3u8 in the library folder is not a playlist")]
    before = playlists_folder(api_library)
    around = sorted(p.name for p in api_library.parent.iterdir())
    for name, tracks, says in requests:
        with pytest.raises(AppError) as refused:
            client.predict(name, tracks, api_name="/save_playlist")
        message = str(refused.value)
        assert says in message and "\n" not in message.strip(), message
        assert str(api_library) not in message or str(api_library) in str(tracks)  # only what the client sent
    assert playlists_folder(api_library) == before
    assert sorted(p.name for p in api_library.parent.iterdir()) == around
    assert not Path("/tmp/evil.m3u8").exists()


def test_a_crash_while_saving_leaves_the_old_playlist_or_the_new(library_copy):
    """Killed (SIGKILL) at each write, fsync, link, rename and folder fsync in turn while replacing a playlist: it
    reads back whole with the old tracks or the new ones; nothing else is left but a hidden temporary file, which
    no player takes for a playlist."""
    import signal
    import subprocess
    import sys

    from music_mood.storage import CRASH_AT_ENV, CRASH_LOG_ENV
    from tests.conftest import ROOT

    db = load_database(LibraryPaths.at(library_copy))
    old, new = [t["file_path"] for t in db.tracks[:2]], [t["file_path"] for t in db.tracks[2:5]]
    playlist = library_copy / "playlists" / "mix.m3u8"
    script = ("import sys; from music_mood.library import LibraryPaths, load_database;"
              "from music_mood.saved_playlists import save_playlist;"
              "save_playlist(load_database(LibraryPaths.at(sys.argv[1])), sys.argv[2:], 'mix')")

    def run(**env):
        return subprocess.run([sys.executable, "-c", script, str(library_copy), *new], cwd=ROOT,
                              capture_output=True, env={**os.environ, **env}, timeout=120)

    log = library_copy.parent / "points.log"
    save_playlist(db, old, "mix")
    assert run(**{CRASH_LOG_ENV: str(log)}).returncode == 0
    points = log.read_text(encoding="utf-8").splitlines()
    assert len(points) >= 5, points  # write, fsync, link (refused: the name is taken), rename, fsync of the folder
    for number in range(1, len(points) + 1):
        save_playlist(db, old, "mix")
        assert run(**{CRASH_AT_ENV: str(number)}).returncode == -signal.SIGKILL
        entries = [path.resolve() for path, _, _ in read_back(playlist)]
        assert entries in ([(library_copy / p).resolve() for p in old], [(library_copy / p).resolve() for p in new])
        left = set(playlists_folder(library_copy)) - {"mix.m3u8"}
        assert all(name.startswith(".mix.m3u8.") and name.endswith(".tmp") for name in left), left
    assert_lists(playlist, library_copy, new)  # killed after the rename: the new playlist stays


# ---------------------------------------------------------------------------------------------- on a server

@pytest.fixture(scope="module")
def servers(tmp_path_factory, sample_tracks):
    """Two real Supysonic servers, holding three of the built library's six files: two on the first, one on the
    second."""
    from tests.server_library import start_server

    built = sample_tracks[::5]
    started = []
    try:
        started.append(start_server(tmp_path_factory.mktemp("north"), built[:2], "North"))
        started.append(start_server(tmp_path_factory.mktemp("south"), built[2:3], "South"))
        yield started
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def server_library(library_copy, servers, monkeypatch) -> Path:
    """The built library with the servers' files turned into their songs (tests/server_library.py)."""
    from music_mood.subsonic import PASSWORD_ENV
    from tests.server_library import PASSWORD, move_to_servers

    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    move_to_servers(library_copy, servers)
    return library_copy


def server_playlists(server, name: str) -> list[list[str]]:
    """The song ids, in order, of each playlist called `name` on `server`, read back with getPlaylist."""
    from music_mood.subsonic import connect, parse_server
    from tests.server_library import PASSWORD

    with connect(parse_server(server.url), PASSWORD) as client:
        return [client.get_playlist(str(p["id"])).song_ids for p in client.list_playlists() if p["name"] == name]


def tracks_by_place(library: Path, servers) -> tuple[list[dict], list[dict], list[dict]]:
    """The library's records: (files, songs of the first server, songs of the second)."""
    db = load_database(LibraryPaths.at(library))
    return tuple([t for t in db.tracks if t.get("source", "") == place or (not place and not t.get("song_id"))]
                 for place in ("", servers[0].url, servers[1].url))


def test_server_songs_become_a_playlist_on_their_server_in_order(server_library, servers):
    _, north, _ = tracks_by_place(server_library, servers)
    db = load_database(LibraryPaths.at(server_library))
    order = [north[1], north[0]]
    saved = save_playlist(db, [order[0]["id"], order[1]["file_path"]], "Évening ♪")
    assert server_playlists(servers[0], "Évening ♪") == [[t["song_id"] for t in order]]
    assert saved.file is None and not (server_library / "playlists").exists()  # no file track: no M3U8
    [place] = saved.to_dict()["saved"]
    assert place == {"to": "subsonic", "server": servers[0].url, "tracks": 2, "playlist_id": place["playlist_id"],
                     "titles": [f"North Band - {t['title']}" for t in order]}


def test_the_same_name_again_updates_the_one_playlist_on_the_server(server_library, servers):
    _, north, _ = tracks_by_place(server_library, servers)
    db = load_database(LibraryPaths.at(server_library))
    first = save_playlist(db, [t["id"] for t in north], "Again")
    second = save_playlist(db, [north[1]["id"]], "Again")
    assert server_playlists(servers[0], "Again") == [[north[1]["song_id"]]]  # one playlist, the new songs
    assert first.servers[0].playlist_id == second.servers[0].playlist_id


def test_a_mixed_result_saves_each_part_where_it_lives_and_says_which_went_where(server_library, servers):
    files, north, south = tracks_by_place(server_library, servers)
    db = load_database(LibraryPaths.at(server_library))
    order = [files[0], north[0], files[1], south[0], north[1]]
    saved = save_playlist(db, [t["id"] for t in order], "Mixed")
    playlist = server_library / "playlists" / "Mixed.m3u8"
    assert_lists(playlist, server_library, [files[0]["file_path"], files[1]["file_path"]])
    assert server_playlists(servers[0], "Mixed") == [[north[0]["song_id"], north[1]["song_id"]]]
    assert server_playlists(servers[1], "Mixed") == [[south[0]["song_id"]]]
    answer = saved.to_dict()
    assert answer["tracks"] == 5 and answer["failed"] == []
    assert [(p["to"], p.get("file") or p.get("server"), p["titles"]) for p in answer["saved"]] == [
        ("m3u8", "playlists/Mixed.m3u8", [track_title(files[0]), track_title(files[1])]),
        ("subsonic", servers[0].url, [track_title(north[0]), track_title(north[1])]),
        ("subsonic", servers[1].url, [track_title(south[0])])]
    lines = saved.summary().splitlines()
    saved_as = "Saved the playlist 'Mixed'"
    assert lines == [f"{saved_as}: 2 track(s) in {playlist}: {track_title(files[0])}, {track_title(files[1])}",
                     (f"{saved_as}: 2 track(s) on the server {servers[0].url}: {track_title(north[0])}, "
                      f"{track_title(north[1])}"),
                     f"{saved_as}: 1 track(s) on the server {servers[1].url}: {track_title(south[0])}"]
    from music_mood.web.views import saved_playlist_status

    status = saved_playlist_status(answer)
    assert "in playlists/Mixed.m3u8 in the library folder" in status and servers[1].url in status


def test_cli_a_server_that_fails_is_one_line_and_the_m3u8_part_is_saved(server_library, servers, checkpoints,
                                                                        call_cli):
    from tests.subsonic_server import free_port

    dead = f"http://carol@127.0.0.1:{free_port()}"  # nothing listens there

    def to_dead_server(records):
        for record in records:
            if record.get("source") == servers[1].url:
                record["source"] = dead

    store_as_table(server_library, table=False, change=to_dead_server)
    files, _, _ = tracks_by_place(server_library, servers)
    done = _cli(call_cli, checkpoints, "--like", files[0]["id"], "--topk", "5", "--max-per-artist", "0", "--json",
                "--save-playlist", "Half")
    assert done.returncode == 1
    results = json.loads(done.stdout)["results"]
    db = load_database(LibraryPaths.at(server_library))
    kept = [r["file_path"] for r in results if not db.tracks[db.row_of_file(r["file_path"])].get("song_id")]
    gone = [db.tracks[db.row_of_file(r["file_path"])] for r in results
            if db.tracks[db.row_of_file(r["file_path"])].get("source") == dead]
    assert kept and gone  # the result holds files and the dead server's song
    playlist = server_library / "playlists" / "Half.m3u8"
    assert_lists(playlist, server_library, kept)
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert errors == [errors[0]] and errors[0].startswith(
        f"Error: the playlist 'Half' was not saved on the server {dead} (1 track(s): {track_title(gone[0])}): ")
    assert errors[0].endswith(f"; the other tracks were saved in {playlist}") and "Traceback" not in done.stderr
    assert f"track(s) on the server {servers[0].url}" in done.stderr  # the live server got its songs


def test_save_playlist_api_answers_where_each_part_went(server_library, servers, checkpoints):
    from gradio_client import Client

    from music_mood.live import LiveLibrary
    from music_mood.models import BackgroundModels
    from music_mood.web.page import build_app

    files, north, south = tracks_by_place(server_library, servers)
    library = LiveLibrary(LibraryPaths.at(server_library), checkpoints["clap"])
    demo = build_app(library, BackgroundModels(checkpoints["blip"], checkpoints["clap"]))
    demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                ssr_mode=False)
    try:
        answer = Client(demo.local_url, verbose=False).predict(
            "Page ♪", [south[0]["id"], files[2]["file_path"], north[0]["id"]], api_name="/save_playlist")
    finally:
        demo.close(verbose=False)
        library.servers.close()
    # A server is named as the Library tab lists the sources, never by its address or user.
    assert [(p["to"], p.get("file") or p.get("server"), p["tracks"]) for p in answer["saved"]] == [
        ("m3u8", "playlists/Page ♪.m3u8", 1), ("subsonic", "Subsonic server 2", 1),
        ("subsonic", "Subsonic server 1", 1)]
    assert answer["tracks"] == 3 and answer["failed"] == [] and str(server_library) not in json.dumps(answer)
    assert not [s for s in servers for shown in (f":{s.port}", f"{s.user}@") if shown in json.dumps(answer)]
    assert server_playlists(servers[1], "Page ♪") == [[south[0]["song_id"]]]
    assert server_playlists(servers[0], "Page ♪") == [[north[0]["song_id"]]]
