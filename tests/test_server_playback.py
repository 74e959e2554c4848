"""Server tracks in the page: a library whose tracks include songs of a real Supysonic server (records made as
remote.py describes them, committed through the product's own save_database) plays them through the app's
/track/<id>, which relays the server's stream with Range and never shows the server's address or password; they
rank as present in searches, with no file on this machine; the Library tab says each track's source and lists the
server source; and a page reached from a network cannot point the app at a folder or a server."""
from __future__ import annotations

import json
import re
import shutil
import socket
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from music_mood.audio import file_sha256
from music_mood.library import LibraryPaths, load_database, save_database
from music_mood.live import LiveLibrary
from music_mood.remote import SERVER_KIND, ServerConnections, is_server_track, server_file_path
from music_mood.sources import committed_sources
from music_mood.storage import acquire_lock
from music_mood.subsonic import PASSWORD_ENV, PROXY_HEADERS, connect, parse_server
from tests import subsonic_server
from tests.app_server import file_data, free_port, get, path_sending_client, serving_app
from tests.subsonic_server import Supysonic, start_supysonic

USER = "bob"
PASSWORD = "sé&cret=pass #%+ ♪"
TAGS = [{"title": "Harbour Lights", "artist": "Ana Lima", "album": "Harbour", "genre": "Harbour Chanson"},
        {"title": "Neon Run", "artist": "The Pulse", "album": "Neon", "genre": "Neon Zeuhl"}]
# What the app adds of its own to an answer (uvicorn's and Starlette's), beside what it relays of the server's.
APP_HEADERS = {"date", "server", "content-type", "content-length", "connection", "transfer-encoding"}


@pytest.fixture(scope="module")
def supysonic(tmp_path_factory, sample_tracks):
    """One Supysonic for the module holding two of the built library's tracks (sample_tracks[::5]), tagged."""
    server = start_supysonic(tmp_path_factory.mktemp("supysonic"), USER, PASSWORD,
                             list(zip(sample_tracks[::5][:2], TAGS)))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def password():
    """The app finds the server's password where a user gives it without a terminal: the environment."""
    with pytest.MonkeyPatch.context() as scope:
        scope.setenv(PASSWORD_ENV, PASSWORD)
        yield PASSWORD


def commit_records(library: Path, change, sources: list[dict] | None = None) -> None:
    """Commit `library` again through save_database, under its lock, after `change(tracks)` edits its records (and
    with `sources` when given, else the committed ones)."""
    paths = LibraryPaths.at(library)
    lock = acquire_lock(paths.lock, timeout=5)
    try:
        db = load_database(paths)
        db.tracks = [dict(t) for t in db.tracks]
        change(db.tracks)
        sample_rate = json.loads(paths.metadata.read_text(encoding="utf-8"))["embedding"]["sample_rate"]
        save_database(db, paths, sample_rate, sources=sources)
    finally:
        lock.release()


def add_server_tracks(library: Path, server: Supysonic) -> None:
    """Make the tracks of `library` whose files the server holds into the server's songs, as a build of the server
    source records them (remote.py): "source" its address, "song_id", "file_path" server_file_path, "album", and
    the id and sha256 of the server's file; their files here are deleted (a server track has none). Committed with
    the server source, in one commit under the library lock, through save_database."""
    paths = LibraryPaths.at(library)
    with connect(parse_server(server.url), server.password) as client:
        songs = {song.title: song for song in client.iter_songs()}

    def change(tracks: list[dict]) -> None:
        by_name = {Path(t["file_path"]).name: t for t in tracks}
        for served in server.tracks:
            track, song = by_name[served.path.name], songs[served.title]
            (library / track["file_path"]).unlink()
            digest = file_sha256(served.path)
            track.update(source=server.url, song_id=song.id, file_path=server_file_path(server.url, song.id),
                         title=served.title, artist=served.artist, album=served.album, genre=served.genre,
                         id=digest[:16], sha256=digest, size=served.path.stat().st_size)

    source = {"kind": SERVER_KIND, "path": server.url, "added": "2026-12-01T10:00:00+0000", "excluded": []}
    commit_records(library, change, [*committed_sources(paths), source])


@pytest.fixture(scope="module")
def server_library(built_library, supysonic, tmp_path_factory) -> Path:
    library = tmp_path_factory.mktemp("server-library") / "library"
    shutil.copytree(built_library, library)
    add_server_tracks(library, supysonic)
    return library


def server_tracks(library: Path) -> list[dict]:
    return [t for t in load_database(LibraryPaths.at(library)).tracks if is_server_track(t)]


@pytest.fixture(scope="module")
def page(server_library, checkpoints, password, tmp_path_factory):
    """The page served in this process over server_library by the app's own launch (its track and render routes),
    the models never loaded (nothing here needs them); yields (url, the LiveLibrary)."""
    from music_mood.models import BackgroundModels
    from music_mood.serve import RenderFolders
    from music_mood.web import server

    live = LiveLibrary(LibraryPaths.at(server_library), checkpoints["clap"])
    renders = RenderFolders(tmp_path_factory.mktemp("renders"))
    demo = server.launch(live, BackgroundModels(checkpoints["blip"], checkpoints["clap"]), renders, "127.0.0.1",
                         free_port())
    try:
        yield demo.local_url, live
    finally:
        demo.close(verbose=False)
        live.servers.close()
        renders.close()


def port_of(url: str) -> int:
    return int(url.rstrip("/").rsplit(":", 1)[1])


def fetch(url: str, path: str, headers: dict | None = None):
    class Served:
        port = port_of(url)

    return get(Served, path, headers)


def assert_hides_the_server(response, server: Supysonic) -> None:
    """Nothing of the answer names the server: its port, its user, its password (in the headers and the body)."""
    shown = "\n".join(f"{k}: {v}" for k, v in response.getheaders()).encode() + b"\n" + response.body
    for secret in (f":{server.port}", f"{server.user}@", server.password, quote(server.password)):
        assert secret.encode() not in shown, secret


# ---------------------------------------------------------------------------------------------- playback


def test_a_server_track_plays_through_the_app_with_ranges(page, server_library, supysonic):
    url, _ = page
    for track in server_tracks(server_library):
        data = next(s.path for s in supysonic.tracks if s.title == track["title"]).read_bytes()
        whole = fetch(url, f"/track/{track['id']}")
        assert whole.status == 200 and whole.body == data
        assert whole.getheader("content-type").startswith("audio/")
        assert {k.lower() for k, _ in whole.getheaders()} <= set(PROXY_HEADERS) | APP_HEADERS
        assert_hides_the_server(whole, supysonic)

        part = fetch(url, f"/track/{track['id']}", headers={"Range": "bytes=100-1099"})
        assert part.status == 206 and part.body == data[100:1100]
        assert part.getheader("content-range") == f"bytes 100-1099/{len(data)}"
        assert_hides_the_server(part, supysonic)

        past = fetch(url, f"/track/{track['id']}", headers={"Range": f"bytes={len(data) + 10}-"})
        assert past.status == 416 and past.getheader("content-range") == f"bytes */{len(data)}"


def test_a_browser_that_goes_away_lets_the_server_connection_go(page, server_library):
    """A player drops its request after a few bytes (it seeks): the app closes its request to the server."""
    url, live = page
    track = server_tracks(server_library)[0]
    client = live.servers.client(track["source"])
    closed = []
    relay = client.proxy_stream

    def watched(song_id, range_header=None, **options):
        upstream = relay(song_id, range_header, **options)
        close = upstream._close
        upstream._close = lambda: (closed.append(song_id), close())
        return upstream

    client.proxy_stream = watched
    try:
        with socket.create_connection(("127.0.0.1", port_of(url))) as browser:
            browser.sendall(f"GET /track/{track['id']} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert browser.recv(1024).startswith(b"HTTP/1.1 200")
        deadline = time.monotonic() + 10
        while not closed and time.monotonic() < deadline:
            time.sleep(0.05)
        assert track["song_id"] in closed
    finally:
        del client.proxy_stream


def test_a_server_that_is_down_is_a_502_of_one_line_and_the_next_request_connects_again(
        server_library, supysonic, password, checkpoints, tmp_path, capfd):
    """A second Supysonic on the module's library: played, stopped (502, one line, no traceback, nothing of the
    server in the answer), started again on the same port (the next request plays: the connection was forgotten)."""
    from starlette.applications import Starlette
    from starlette.testclient import TestClient

    from music_mood.serve import track_routes

    second = Supysonic(supysonic.folder, supysonic.user, supysonic.password)
    second.start()
    try:
        library = tmp_path / "copy"
        shutil.copytree(server_library, library)
        paths = LibraryPaths.at(library)

        def on_the_second(tracks: list[dict]) -> None:  # the same songs, on the second server
            for t in tracks:
                if is_server_track(t):
                    t.update(source=second.url, file_path=server_file_path(second.url, t["song_id"]))

        commit_records(library, on_the_second, [{**committed_sources(paths)[0], "path": second.url}])
        live = LiveLibrary(paths, checkpoints["clap"])
        track = server_tracks(library)[0]
        with TestClient(Starlette(routes=track_routes(live))) as app:
            assert app.get(f"/track/{track['id']}").status_code == 200
            second.stop()
            capfd.readouterr()
            down = app.get(f"/track/{track['id']}")
            assert down.status_code == 502
            assert down.text == "This track's music server cannot be reached now; try again later."
            err = capfd.readouterr().err
            assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and password not in err
            with pytest.MonkeyPatch.context() as scope:  # the same address again
                scope.setattr(subsonic_server, "free_port", lambda: port_of(second.url))
                second.start()
            again = app.get(f"/track/{track['id']}", headers={"Range": "bytes=0-99"})
            assert again.status_code == 206 and len(again.content) == 100
        live.servers.close()
    finally:
        second.stop()


def test_a_song_gone_from_its_server_is_404_and_only_registered_servers_are_asked(server_library, password,
                                                                                  checkpoints, tmp_path):
    from music_mood.serve import server_track_response, track_response

    library = tmp_path / "copy"
    shutil.copytree(server_library, library)
    live = LiveLibrary(LibraryPaths.at(library), checkpoints["clap"])
    track = server_tracks(library)[0]
    try:
        assert track_response(live, track["id"]).status_code == 200
        gone = dict(track, song_id="00000000-0000-0000-0000-000000000000")  # as a song removed since the build
        assert server_track_response(live.servers, gone, None).status_code == 404
        # A record naming a server that is no source of the library is never relayed (nothing asks that server).
        elsewhere = f"http://{USER}@127.0.0.1:{free_port()}"
        commit_records(library, lambda tracks: [t.update(source=elsewhere) for t in tracks if t["id"] == track["id"]])
        assert live.track_server(live.served_track(track["id"])) is None
        assert track_response(live, track["id"]).status_code == 403
    finally:
        live.servers.close()


# ---------------------------------------------------------------------------------------------- search and page


def test_server_tracks_are_recommended_though_no_file_of_theirs_is_here(page, server_library, supysonic):
    from gradio_client import Client

    url, _ = page
    remote = server_tracks(server_library)
    assert remote and not any(Path(t["file_path"]).exists() for t in remote)
    client = Client(url, verbose=False)
    like = next(t for t in load_database(LibraryPaths.at(server_library)).tracks if not is_server_track(t))
    result = client.predict(like=like["id"], topk=20, api_name="/more_like_this")  # no model needed
    assert result["skipped_missing"] == []
    shown = {t["id"]: t for t in result["results"]}
    assert {t["id"] for t in remote} <= shown.keys()
    for track in remote:
        assert shown[track["id"]]["audio_url"] == f"/track/{track['id']}"
        played = fetch(url, shown[track["id"]]["audio_url"], headers={"Range": "bytes=0-99"})
        assert played.status == 206 and len(played.body) == 100
    assert PASSWORD not in json.dumps(result, ensure_ascii=False)
    assert all(f":{supysonic.port}" not in t["audio_url"] for t in result["results"])


def test_the_page_and_its_api_never_hold_the_password(page, supysonic):
    url, _ = page
    for path in ("/", "/config", "/gradio_api/info"):
        answer = fetch(url, path)
        assert answer.status == 200, path
        assert_password_free(answer, supysonic)


def assert_password_free(response, server: Supysonic) -> None:
    shown = "\n".join(f"{k}: {v}" for k, v in response.getheaders()).encode() + b"\n" + response.body
    for secret in (server.password, quote(server.password), json.dumps(server.password)[1:-1]):
        assert secret.encode() not in shown, secret


def test_the_library_tab_says_each_tracks_source_and_lists_the_server(server_library, supysonic):
    """A server track's source is the server's label and its file its id; the sources list names it the same."""
    from music_mood.remote import hidden_servers, server_labels
    from music_mood.sources import source_lines
    from music_mood.web.views import LIBRARY_COLUMNS, library_rows, sources_note

    paths = LibraryPaths.at(server_library)
    db = load_database(paths)
    labels = server_labels(committed_sources(paths))
    assert labels == {supysonic.url: "Subsonic server 1"}
    rows = library_rows(db, labels)
    source, file = LIBRARY_COLUMNS.index("source"), LIBRARY_COLUMNS.index("file")
    assert [row[source] for row in rows] == ["Subsonic server 1" if is_server_track(t) else "library"
                                             for t in db.tracks]
    assert [row[file] for row in rows] == [t["id"] if is_server_track(t) else t["file_path"] for t in db.tracks]
    assert sum(row[source] == "library" for row in rows) == len(db) - len(supysonic.tracks)
    note = sources_note([hidden_servers(line, labels) for line in source_lines(paths, db.tracks)])
    assert f"- `{SERVER_KIND}  Subsonic server 1  {len(supysonic.tracks)} tracks, last scan " in note
    assert_nothing_of_the_server([("note", note)], supysonic)


def test_a_servers_failure_is_said_in_the_page_by_its_label():
    """A server's errors name it (its address, its URL, its host and port): a failed /save_playlist part and a
    soundtrack's error say its label instead, and a server that is no source of the library is "a Subsonic
    server"."""
    import gradio as gr

    from music_mood.render import RenderError
    from music_mood.web.errors import user_errors
    from music_mood.web.playlists import servers_hidden

    address, other = "http://bob@nas.local:4533/music", "http://eve@old.local:80"
    labels = {address: "Subsonic server 1"}
    said = f"{address} refused; http://nas.local:4533/music/rest/ping.view down; bob@nas.local:4533, nas.local:4533"
    failed = [{"to": "subsonic", "server": server, "tracks": 1, "titles": ["a"], "error": error}
              for server, error in ((address, said), (other, f"{other} refused; eve@old.local:80"))]
    answer = servers_hidden({"name": "x", "tracks": 0, "saved": [], "failed": failed}, labels)
    assert [place["server"] for place in answer["failed"]] == ["Subsonic server 1", "a Subsonic server"]
    assert answer["failed"][0]["error"].startswith("Subsonic server 1 refused; Subsonic server 1/rest/ping.view")
    for secret in ("nas.local", "bob", "old.local", "eve"):
        assert secret not in json.dumps(answer), secret
    with pytest.raises(gr.Error) as raised, user_errors(soundtrack=True, servers=labels):
        raise RenderError(f"cannot play “Neon” of the server {address}: {said}")
    assert "Cannot play “Neon” of the server Subsonic server 1: Subsonic server 1 refused" in raised.value.message
    assert "nas.local" not in raised.value.message and "bob" not in raised.value.message


def assert_nothing_of_the_server(shown: list[tuple[str, object]], server: Supysonic) -> None:
    """No (what, answer) of `shown` names the server: its host and port, its user (in an address or alone), its
    password. An answer is text, bytes (a served file) or JSON-able data."""
    for what, answer in shown:
        if isinstance(answer, bytes):
            text = answer.decode("utf-8", errors="replace")
        else:
            text = answer if isinstance(answer, str) else json.dumps(answer, ensure_ascii=False, default=str)
        for secret in (f"127.0.0.1:{server.port}", f":{server.port}", f"{server.user}@", server.password,
                       quote(server.password)):
            assert secret not in text, (what, secret)
        assert not re.search(rf"\b{server.user}\b", text), what


def raw_call(app, endpoint: str, data: list) -> str:
    """What a plain HTTP client reads of /gradio_api/call/ENDPOINT (the event's stream, as text)."""
    import httpx

    asked = httpx.post(f"{app.url}gradio_api/call/{endpoint}", json={"data": data}, timeout=60)
    asked.raise_for_status()
    return httpx.get(f"{app.url}gradio_api/call/{endpoint}/{asked.json()['event_id']}", timeout=120).text


def page_handler(app, name: str):
    """The page's own handler `name` (an event the browser runs, not in the API), as the launched page holds it."""
    return next(f.fn for f in app.demo.fns.values() if getattr(f.fn, "__name__", "") == name)


def test_no_answer_html_or_served_file_of_the_page_names_the_server(server_library, supysonic, checkpoints,
                                                                   shared_exports, photos, tmp_path):
    """Every endpoint of the page served in process, on a library holding the server's songs: the answers (through
    gradio_client and raw /gradio_api calls), the HTML the page makes of them, the Library tab, the soundtrack's
    served files and the saved playlist's answer name a server's song by its id and the server by its label, never
    its address or user; and what the page sends back of them works: More like this on a server song, a playlist
    of them made on the server (read back with getPlaylist), a song's tags corrected, a song removed."""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    from music_mood.web.library_tab import edit_cell
    from music_mood.web.views import LIBRARY_COLUMNS, render_analysis, render_slideshow, saved_playlist_status

    library = tmp_path / "copy"
    shutil.copytree(server_library, library)
    songs = server_tracks(library)
    genres = [t.genre for t in supysonic.tracks]
    shown: list[tuple[str, object]] = []
    with serving_app(library, checkpoints, tmp_path / "run", exports=shared_exports) as app, \
            pytest.MonkeyPatch.context() as scope:
        scope.setenv(PASSWORD_ENV, PASSWORD)  # serving_app gives the page no MUSIC_MOOD_* of the test run
        shown += [(path, get(app, path).body) for path in ("/", "/config", "/gradio_api/info")]
        client = Client(app.url, verbose=False)

        found = client.predict(image=handle_file(str(photos["coffee.png"])), text="harbour", topk=10, moods=[],
                               genres=genres, api_name="/recommend")
        assert sorted(t["file_path"] for t in found["results"]) == sorted(t["id"] for t in songs)
        html = render_analysis(found)[3]
        assert all(f'data-file="{t["id"]}"' in html for t in songs)
        like = client.predict(like=found["results"][0]["file_path"], topk=10, api_name="/more_like_this")
        assert like["results"] and found["results"][0]["id"] not in [t["id"] for t in like["results"]]
        assert found["results"][0]["id"] in like["query_text"]
        shown += [("/recommend", found), ("results HTML", html), ("/more_like_this", like),
                  ("More like this HTML", render_analysis(like)[3]),
                  ("raw /more_like_this", raw_call(app, "more_like_this", [songs[0]["id"], 10, [], [], 2, 0.0, ""]))]

        tab = page_handler(app, "show_library")()
        # The server's own file, uploaded: the library has it already, as the server's song.
        again = client.predict(files=[handle_file(str(supysonic.tracks[0].path))], mood="", api_name="/add_music")
        assert "already in the library as Subsonic server 1" in json.dumps(again, ensure_ascii=False)
        shown += [("Library tab", tab), ("/add_music", again)]
        fixed = client.predict(track=songs[0]["id"], fields={"mood": "calm"}, api_name="/set_track_fields")
        assert fixed["file_path"] == songs[0]["id"] and fixed["mood"] == "calm"
        # A cell of the table edited: the row's file column (a song's id) names the track.
        rows, title = tab[-3], LIBRARY_COLUMNS.index("title")
        row = next(i for i, r in enumerate(rows) if r[LIBRARY_COLUMNS.index("file")] == songs[0]["id"])
        edited = edit_cell(LiveLibrary(LibraryPaths.at(library), checkpoints["clap"]), rows, (row, title), "Harbour")
        assert edited == f"Set the title of {songs[0]['id']} to “Harbour”."
        shown += [("/set_track_fields", fixed), ("a cell edited", edited)]

        slideshow = client.predict(photos=[handle_file(str(photos[name])) for name in ("coffee.png", "rocket.jpg")],
                                   seconds_per_photo=2.0, text="", moods=[], genres=genres, api_name="/soundtrack")
        played = [piece["file_path"] for scene in slideshow["scenes"] for piece in scene["pieces"]]
        assert played and set(played) <= {t["id"] for t in songs}
        shown += [("/soundtrack", slideshow), ("slideshow HTML", render_slideshow(slideshow))]
        files = [*slideshow["files"].values(), *(photo["thumbnail_url"] for photo in slideshow["photos"])]
        for url in files:
            served = get(app, url)
            assert served.status == 200, url
            shown.append((url, served.body))
        try:
            again = client.predict(scene_index=0, api_name="/next_best_track")
            shown += [("/next_best_track", again), ("its HTML", render_slideshow(again))]
        except AppError as e:  # the filter may leave no other song: the refusal names no server either
            shown.append(("/next_best_track refused", str(e)))

        saved = client.predict(name="Hidden ♪", tracks=[t["file_path"] for t in found["results"]],
                               api_name="/save_playlist")
        assert [(p["to"], p.get("server"), p["tracks"]) for p in saved["saved"]] == [
            ("subsonic", "Subsonic server 1", len(songs))]
        shown += [("/save_playlist", saved), ("its status", saved_playlist_status(saved))]
        with connect(parse_server(supysonic.url), PASSWORD) as server:
            assert server.get_playlist(saved["saved"][0]["playlist_id"]).song_ids == [
                next(t["song_id"] for t in songs if t["id"] == r["id"]) for r in found["results"]]

        removed = client.predict(tracks=[songs[1]["id"]], api_name="/remove_tracks")
        assert [item["file_path"] for item in removed["removed"]] == [songs[1]["id"]]
        shown.append(("/remove_tracks", removed))
    assert [t["id"] for t in server_tracks(library)] == [songs[0]["id"]]
    assert_nothing_of_the_server(shown, supysonic)


# ---------------------------------------------------------------------------------------------- a networked page


def library_files(library: Path) -> dict[str, bytes]:
    """Every file of the library folder and its bytes (the lock file aside: any reader may take it)."""
    return {p.relative_to(library).as_posix(): p.read_bytes() for p in sorted(library.rglob("*"))
            if p.is_file() and not p.name.endswith(".lock")}


@pytest.fixture(scope="module")
def networked_library(built_library, supysonic, sample_tracks, clap_audio, tmp_path_factory):
    """A library of every kind of track: processed_music/, a folder source of one track (and a file in it that the
    library does not list, copied there after the build), and the server's songs. Yields (library, folder)."""
    from music_mood.build import build_library
    from music_mood.edit import add_source

    root = tmp_path_factory.mktemp("networked")
    library, folder = root / "library", root / "Music"
    shutil.copytree(built_library, library)
    (folder / "calm").mkdir(parents=True)
    shutil.copyfile(sample_tracks[2], folder / "calm" / sample_tracks[2].name)
    paths = LibraryPaths.at(library)
    add_source(paths, folder)
    assert len(build_library(clap_audio, paths, progress=False).added) == 1
    add_server_tracks(library, supysonic)
    shutil.copyfile(sample_tracks[3], folder / "unlisted.opus")
    return library, folder


def test_a_networked_page_cannot_point_the_app_at_a_folder_or_a_server(networked_library, supysonic, checkpoints,
                                                                      shared_exports, tmp_path):
    """Served as `python app.py --host 0.0.0.0` serves it: no endpoint of its API registers or changes a source,
    and forged requests (track URLs naming files, `..`, a source's unlisted file, the server's URLs; uploads and
    saves given paths and URLs) are all refused, leaving the committed sources and every file as they were."""
    import re

    from gradio_client import Client
    from gradio_client.exceptions import AppError

    library, folder = networked_library
    paths = LibraryPaths.at(library)
    sources, files, music = committed_sources(paths), library_files(library), library_files(folder)
    assert {s["kind"] for s in sources} == {"folder", SERVER_KIND}
    tracks = load_database(paths).tracks
    listed = next(t for t in tracks if t.get("source") == folder.as_posix())
    song = next(t for t in tracks if is_server_track(t))
    unlisted = folder / "unlisted.opus"
    with serving_app(library, checkpoints, tmp_path / "run", exports=shared_exports, host="0.0.0.0") as app:
        api = Client(app.url, verbose=False).view_api(print_info=False, return_format="dict")
        endpoints = {**api["named_endpoints"], **api["unnamed_endpoints"]}
        # Every endpoint is one of these, none about sources: a new one must be looked at here.
        assert set(endpoints) == {"/recommend", "/more_like_this", "/soundtrack", "/next_best_track", "/add_music",
                                  "/set_track_fields", "/remove_tracks", "/save_playlist"}
        assert endpoints and not [name for name in endpoints if re.search("source|folder|server|scan", str(name))]
        for name, info in endpoints.items():
            asked = [str(p.get("parameter_name")) for p in info["parameters"]]
            assert not [p for p in asked if re.search("source|folder|server|url|address|path", p)], (name, asked)

        assert get(app, f"/track/{listed['id']}").status == 200  # what is listed plays, by its id
        forged = [quote(listed["file_path"]), quote(listed["file_path"].lstrip("/")), quote(unlisted.as_posix()),
                  quote(f"{folder}/calm/../unlisted.opus"), f"{listed['id']}/../{file_sha256(unlisted)[:16]}",
                  file_sha256(unlisted)[:16], "../music_database_metadata.json", "%2e%2e/%2e%2e/etc/passwd",
                  quote(song["file_path"], safe=""), quote(song["file_path"]),
                  quote(f"{supysonic.url}/rest/stream.view?id={song['song_id']}", safe=""),
                  f"http://127.0.0.1:{supysonic.port}/rest/stream.view?id={song['song_id']}", listed["id"].upper()]
        for path in forged:
            assert get(app, "/track/" + path).status == 403, path

        client = path_sending_client(app)
        for given in (listed["file_path"], str(unlisted), str(folder), supysonic.url, song["file_path"]):
            with pytest.raises(AppError):
                client.predict(files=[file_data(given)], mood="", api_name="/add_music")
            with pytest.raises(AppError):
                client.predict(name=given, tracks=[listed["id"]], api_name="/save_playlist")
            with pytest.raises(AppError):
                client.predict(name="mine", tracks=[given if given != listed["file_path"] else str(unlisted)],
                               api_name="/save_playlist")
            for field in ("source", "file_path", "song_id"):
                with pytest.raises(AppError):
                    client.predict(track=listed["id"], fields={field: given}, api_name="/set_track_fields")
    assert committed_sources(paths) == sources
    assert library_files(library) == files and library_files(folder) == music


def test_a_soundtrack_mixes_server_tracks_downloaded_into_memory(server_library, supysonic, password,
                                                                 default_models, photos, tmp_path):
    """A soundtrack of the server's songs alone (a genre only they have) mixes exactly as the same plan does from
    local copies of the server's files: each song read from its server, nothing written."""
    from dataclasses import replace

    from music_mood.mix import mix_soundtrack
    from music_mood.search import Filters
    from music_mood.soundtrack import plan_soundtrack

    db = load_database(LibraryPaths.at(server_library))
    genres = [s.genre for s in supysonic.tracks]
    plan = plan_soundtrack(*default_models, db, [str(photos["coffee.png"]), str(photos["rocket.jpg"])], 4.0,
                           filters=Filters(genres=genres), progress=False)
    played = {piece.file_path for scene in plan.scenes for piece in scene.pieces}
    assert played and played <= {t["file_path"] for t in server_tracks(server_library)}
    copies = tmp_path / "copies"
    copies.mkdir()
    by_song = {t["file_path"]: t for t in server_tracks(server_library)}
    for file_path in played:
        served = next(s for s in supysonic.tracks if s.title == by_song[file_path]["title"])
        shutil.copyfile(served.path, copies / f"{by_song[file_path]['song_id']}.opus")
    local = replace(plan, library_root=str(copies), scenes=[
        replace(scene, pieces=[replace(p, file_path=f"{by_song[p.file_path]['song_id']}.opus", source="", song_id="")
                               for p in scene.pieces])
        for scene in plan.scenes])
    before = library_files(server_library)
    with ServerConnections() as servers:
        mixed = mix_soundtrack(plan, servers=servers)
    assert mixed.shape == (round(plan.total_s * 44100), 2) and float(abs(mixed).max()) > 0.01
    assert (mixed == mix_soundtrack(local)).all()
    assert library_files(server_library) == before


def test_recommend_play_streams_a_server_track_into_the_player(server_library, supysonic, password, checkpoints,
                                                               tmp_path, call_cli):
    """recommend.py --play of a server track: its song downloaded into memory and fed to the player's standard
    input (nothing written); with no player that reads a stream, a note says it plays in the app."""
    import os
    import stat

    import recommend

    top = supysonic.tracks[0]
    args = ["--library", server_library, "--clap-model", checkpoints["clap"], "--text", "harbour",
            "--genre", top.genre, "--play", "--json"]
    bin_dir, fed, said = tmp_path / "bin", tmp_path / "fed.bin", tmp_path / "args.txt"
    bin_dir.mkdir()
    (bin_dir / "mpv").write_text(f"#!/bin/sh\necho \"$@\" > {said}\ncat > {fed}\n")
    (bin_dir / "mpv").chmod(0o755 | stat.S_IEXEC)
    done = call_cli(recommend.main, *args, env_extra={"PATH": f"{bin_dir}{os.pathsep}/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["results"][0]["title"] == top.title
    assert fed.read_bytes() == top.path.read_bytes() and said.read_text().split()[-1] == "-"

    (bin_dir / "mpv").unlink()
    done = call_cli(recommend.main, *args, env_extra={"PATH": str(bin_dir)})
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"Note: {top.title} is on a music server and no player here reads a stream (install mpv or ffmpeg); it "
        f"plays in the app (python app.py).")
