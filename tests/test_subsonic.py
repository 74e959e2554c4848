"""music_mood.subsonic against a real Subsonic server: Debian's Supysonic 0.7 (API 1.10.2), started once for the
module on 127.0.0.1 with five real sample tracks (tests/subsonic_server.py). No mock server stands in for it."""
from __future__ import annotations

import hashlib
import http.server
import logging
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import traceback

import pytest

from music_mood.playlists import PlaylistNameError
from music_mood.storage import CRASH_AT_ENV, CRASH_LOG_ENV
from music_mood.subsonic import (
    PASSWORD_ENV,
    DownloadTooLargeError,
    NotSubsonicServerError,
    PasswordError,
    ServerAddressError,
    ServerUnreachableError,
    SubsonicAPIError,
    SubsonicClient,
    SubsonicError,
    WrongPasswordError,
    connect,
    forget_password,
    parse_server,
    password_for,
    password_store_path,
    probe_api_version,
    store_password,
    stored_password,
)
from tests.conftest import ROOT
from tests.subsonic_server import Supysonic, free_port, start_supysonic

USER = "alice"
# Characters that a URL, a form or a hex encoder could get wrong, and non-ASCII ones.
PASSWORD = "pä&ss=wörd? #%+ ♪"
TAGS = [
    {"title": "Café — l'été à Paris ♪", "artist": "Zoë Ørsted", "album": "Été indien", "genre": "Chanson"},
    {"title": "Morning Light", "artist": "Ana Lima", "album": "Été indien", "genre": "Acoustic"},
    {"title": "Quiet Harbour", "artist": "Ana Lima", "album": "Harbour", "genre": "Acoustic"},
    {"title": "Neon Run", "artist": "The Pulse", "album": "Neon", "genre": "Electronic"},
    {"title": "Last Light", "artist": "The Pulse", "album": "Neon", "genre": "Electronic"},
]


@pytest.fixture(scope="module")
def supysonic(tmp_path_factory, sample_tracks):
    """One Supysonic for the module: five sample tracks (of different moods) tagged with TAGS, in three albums."""
    picked = sample_tracks[::6][: len(TAGS)]
    server = start_supysonic(tmp_path_factory.mktemp("supysonic"), USER, PASSWORD, list(zip(picked, TAGS)))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(supysonic):
    with connect(parse_server(supysonic.url), PASSWORD) as session:
        yield session


@pytest.fixture
def songs_by_title(client):
    return {song.title: song for song in client.iter_songs()}


def assert_secret_free(error: BaseException, *secrets: str) -> None:
    """The error is one line, and neither it nor its traceback (chained errors included) holds a secret."""
    message = str(error)
    assert message and "\n" not in message
    printed = "".join(traceback.format_exception(error))
    for secret in secrets:
        for form in (secret, secret.encode("utf-8").hex()):
            assert form not in printed, f"{form!r} shown in {printed!r}"


# ---------------------------------------------------------------------------------------------------- addresses

def test_server_address_is_parsed_into_a_value_without_password():
    server = parse_server("https://bob%40home@music.example.org:8443/subsonic/")
    assert (server.scheme, server.user, server.host, server.port, server.prefix) == \
        ("https", "bob@home", "music.example.org", 8443, "/subsonic")
    assert str(server) == "https://bob%40home@music.example.org:8443/subsonic"
    assert server.base_url == "https://music.example.org:8443/subsonic"
    assert parse_server("http://eve@[::1]/rest/").base_url == "http://[::1]:80"
    assert parse_server(str(server)) == server


@pytest.mark.parametrize("address, says", [
    ("http://alice:hunter2-secret@host:4533", "no password"),
    ("ftp://alice@host", "http:// or https://"),
    ("http://host:4533", "name the user"),
    ("http://alice@host:port", "not a server address"),
    ("http://alice@host:4533/?u=x", "no ?query"),
])
def test_a_bad_address_is_one_line_that_never_repeats_a_password(address, says):
    with pytest.raises(ServerAddressError, match=r"^.*" + says.replace("?", r"\?")) as caught:
        parse_server(address)
    assert_secret_free(caught.value, "hunter2-secret")


# ---------------------------------------------------------------------------------------------------- passwords

def test_password_store_is_one_0600_file_replaced_atomically(tmp_path):
    store = tmp_path / "config" / "subsonic-passwords.json"
    first, second = parse_server("http://alice@a:1"), parse_server("http://alice@b:2/x")
    assert stored_password(first, store) is None
    assert store_password(first, PASSWORD, store) == store
    store_password(second, "other", store)
    store_password(first, "changed ♪", store)
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.parent.stat().st_mode) == 0o700
    assert (stored_password(first, store), stored_password(second, store)) == ("changed ♪", "other")
    assert [p.name for p in store.parent.iterdir()] == [store.name]  # no temp file left
    assert forget_password(second, store) and not forget_password(second, store)
    assert stored_password(second, store) is None


def test_password_store_defaults_to_the_user_config_folder(tmp_path):
    assert password_store_path({"MUSIC_MOOD_CONFIG": str(tmp_path)}) == tmp_path / "subsonic-passwords.json"
    assert password_store_path({"XDG_CONFIG_HOME": str(tmp_path), "HOME": "/nowhere"}) == \
        tmp_path / "music-mood" / "subsonic-passwords.json"


def test_a_store_others_can_read_or_a_damaged_one_is_refused_without_showing_it(tmp_path):
    store = tmp_path / "passwords.json"
    server = parse_server("http://alice@a:1")
    store_password(server, PASSWORD, store)
    store.chmod(0o644)
    with pytest.raises(PasswordError, match="chmod 600") as caught:
        stored_password(server, store)
    assert_secret_free(caught.value, PASSWORD)
    store.write_text('{"servers": {"http://alice@a:1": "' + "half-written-secret", encoding="utf-8")
    store.chmod(0o600)
    with pytest.raises(PasswordError, match="damaged") as caught:
        stored_password(server, store)
    assert_secret_free(caught.value, "half-written-secret")


def test_password_comes_from_the_environment_then_the_store_then_the_terminal(tmp_path):
    store, server = tmp_path / "passwords.json", parse_server("http://alice@a:1")
    asked = []
    prompt = lambda text: asked.append(text) or "typed"
    assert password_for(server, store, {PASSWORD_ENV: "from-env"}, prompt, interactive=True) == "from-env"
    assert password_for(server, store, {}, prompt, interactive=True) == "typed"
    assert asked == ["Password for http://alice@a:1: "]
    with pytest.raises(PasswordError, match=PASSWORD_ENV):
        password_for(server, store, {}, prompt, interactive=False)
    store_password(server, "stored", store)
    assert password_for(server, store, {}, prompt, interactive=False) == "stored"
    assert password_for(server, store, {PASSWORD_ENV: "from-env"}, prompt, interactive=False) == "from-env"


# ---------------------------------------------------------------------------------------------------- authentication

def test_supysonic_speaks_api_1_10_2_so_the_password_goes_as_enc(supysonic, client):
    assert probe_api_version(parse_server(supysonic.url)) == "1.10.2"
    assert (client.api_version, client.auth) == ("1.10.2", "enc")
    assert client.call("ping")["status"] == "ok"
    assert str(supysonic.port) in repr(client) and PASSWORD not in repr(client)


def test_supysonic_refuses_a_token_which_is_why_the_fallback_exists(supysonic, caplog):
    """Sent a token anyway, Supysonic 0.7 answers "a required parameter is missing" (it looks for p only)."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="httpx")  # a program run in this process quietens it (cli)
    with SubsonicClient(parse_server(supysonic.url), PASSWORD, "1.10.2", auth="token") as token_client:
        with pytest.raises(SubsonicAPIError) as caught:
            token_client.call("ping")
        assert caught.value.code == 10
        assert_secret_free(caught.value, PASSWORD, *token_client.known_secrets())
        assert "t=***&s=***" in caplog.text
        assert not any(secret in caplog.text for secret in token_client.known_secrets())


def test_token_is_md5_of_password_and_a_fresh_salt_for_api_1_13_and_later():
    client = SubsonicClient(parse_server("http://alice@127.0.0.1:9"), PASSWORD, "1.16.1")
    assert client.auth == "token"
    first, second = dict(client._params()), dict(client._params())
    assert "p" not in first and first["s"] != second["s"]
    for params in (first, second):
        assert params["t"] == hashlib.md5((PASSWORD + params["s"]).encode("utf-8")).hexdigest()
    assert SubsonicClient(parse_server("http://alice@127.0.0.1:9"), PASSWORD, "1.12.0").auth == "enc"


def test_wrong_password_is_one_line_without_the_password(supysonic):
    wrong = "not-the-pässword-42"
    with pytest.raises(WrongPasswordError, match=r"refused the user name or password") as caught:
        connect(parse_server(supysonic.url), wrong)
    assert_secret_free(caught.value, wrong, PASSWORD)


def test_server_down_is_one_line_without_the_password():
    server = parse_server(f"http://alice@127.0.0.1:{free_port()}")
    with pytest.raises(ServerUnreachableError, match=r"^the Subsonic server at http://127.0.0.1:\d+ is unreachable "
                                                     r"\(cannot connect") as caught:
        connect(server, PASSWORD)
    assert_secret_free(caught.value, PASSWORD)


def test_server_that_never_answers_times_out_in_one_line():
    with socket.socket() as listening:  # accepts connections (the kernel does) and never answers
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        server = parse_server(f"http://alice@127.0.0.1:{listening.getsockname()[1]}")
        with pytest.raises(ServerUnreachableError, match="did not answer in time") as caught:
            connect(server, PASSWORD, timeout=0.5)
    assert_secret_free(caught.value, PASSWORD)


def test_a_web_server_that_is_not_subsonic_is_said_so(tmp_path):
    (tmp_path / "index.html").write_text("<h1>my photos</h1>", encoding="utf-8")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: Quiet(*a, directory=str(tmp_path)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        server = parse_server(f"http://alice@127.0.0.1:{httpd.server_address[1]}")
        with pytest.raises(NotSubsonicServerError, match=r"does not answer as a Subsonic server \(HTTP 404") as caught:
            connect(server, PASSWORD)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert_secret_free(caught.value, PASSWORD)


def test_no_credential_reaches_the_logs(supysonic, caplog):
    """httpx logs every request's URL at INFO; the token, salt and enc: password in it are blanked."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="httpx")  # a program run in this process quietens it (cli)
    with connect(parse_server(supysonic.url), PASSWORD) as session:
        song = next(session.iter_songs())
        session.download_song(song.id)
        with pytest.raises(SubsonicError):
            session.call("getSong", {"id": "not-a-song"})
        secrets = session.known_secrets()
    assert "HTTP Request: GET" in caplog.text  # httpx did log the requests
    for secret in secrets | {PASSWORD}:
        assert secret not in caplog.text


# ---------------------------------------------------------------------------------------------------- songs

@pytest.mark.parametrize("method, page_size", [("search3", 2), ("albums", 1), ("folders", 1), ("auto", 2)])
def test_every_song_is_listed_page_by_page_with_its_tags(supysonic, client, method, page_size):
    """Pages smaller than the library (5 songs, 3 albums): all of them come only if paging works."""
    songs = list(client.iter_songs(page_size=page_size, method=method))
    assert len({song.id for song in songs}) == len(songs) == len(supysonic.tracks)
    by_title = {song.title: song for song in songs}
    for track in supysonic.tracks:
        song = by_title[track.title]
        assert (song.artist, song.album, song.genre, song.suffix) == (track.artist, track.album, track.genre, "opus")
        assert song.size == track.path.stat().st_size
        assert 20 < song.duration < 40  # the sample tracks are about half a minute long


def test_supysonic_lists_by_search3_with_an_empty_query(client):
    assert client.listing_method() == "search3"


def test_a_song_downloads_into_memory_as_the_file_it_is(supysonic, client, songs_by_title):
    for track in supysonic.tracks[:2]:
        assert client.download_song(songs_by_title[track.title].id) == track.path.read_bytes()


def test_a_song_over_the_size_limit_is_refused(supysonic, client, songs_by_title):
    track = supysonic.tracks[0]
    with pytest.raises(DownloadTooLargeError, match="larger than the download limit"):
        client.download_song(songs_by_title[track.title].id, max_bytes=track.path.stat().st_size - 1)


def test_a_song_the_server_does_not_have_is_one_line(client):
    with pytest.raises(SubsonicAPIError, match=r"^http://alice@127.0.0.1:\d+: download failed: Subsonic error") \
            as caught:
        client.download_song("00000000-0000-0000-0000-000000000000")
    assert_secret_free(caught.value, PASSWORD)


def test_stream_is_proxied_with_range(supysonic, client, songs_by_title):
    track = supysonic.tracks[1]
    data, song_id = track.path.read_bytes(), songs_by_title[track.title].id

    part = client.proxy_stream(song_id, "bytes=100-1099")
    assert part.status == 206
    assert part.headers["content-range"] == f"bytes 100-1099/{len(data)}"
    assert b"".join(part.body) == data[100:1100]

    whole = client.proxy_stream(song_id)
    assert whole.status == 200 and whole.headers["content-type"].startswith("audio/")
    assert int(whole.headers["content-length"]) == len(data)
    assert b"".join(whole.body) == data
    assert set(whole.headers) <= {"content-type", "content-length", "content-range", "accept-ranges",
                                  "last-modified", "etag"}

    tail = client.proxy_stream(song_id, f"bytes={len(data) - 10}-")
    assert (tail.status, b"".join(tail.body)) == (206, data[-10:])

    unread = client.proxy_stream(song_id, "bytes=0-")
    unread.close()  # a browser that went away: the connection is let go


# ---------------------------------------------------------------------------------------------------- playlists

def test_playlist_is_created_then_replaced_by_name_never_duplicated(client, songs_by_title):
    name = "Soirée d'été ♪"
    ids = [song.id for song in songs_by_title.values()]

    created = client.save_playlist(name, ids[:2])
    assert (created.name, created.song_ids) == (name, ids[:2])

    updated = client.save_playlist(name, [ids[4], ids[0], ids[3]])
    assert updated.id == created.id
    assert client.get_playlist(created.id).song_ids == [ids[4], ids[0], ids[3]]
    assert [p["name"] for p in client.list_playlists()].count(name) == 1
    titles = {song.id: song.title for song in songs_by_title.values()}
    assert [song.title for song in client.get_playlist(created.id).songs] == [titles[i] for i in updated.song_ids]

    client.replace_playlist_songs(created.id, [ids[1]])  # the updatePlaylist way, which other servers may need
    assert client.get_playlist(created.id).song_ids == [ids[1]]

    with pytest.raises(PlaylistNameError):
        client.save_playlist("two\nlines", ids[:1])
    other = client.save_playlist("Another one", ids[2:4])
    assert other.id != created.id and client.get_playlist(created.id).song_ids == [ids[1]]


def test_saving_to_a_missing_server_is_one_line():
    server = parse_server(f"http://alice@127.0.0.1:{free_port()}")
    client = SubsonicClient(server, PASSWORD, "1.10.2")
    with pytest.raises(ServerUnreachableError) as caught:
        client.save_playlist("x", ["1"])
    assert_secret_free(caught.value, PASSWORD)


def test_a_range_past_the_end_is_416_passed_on(supysonic, client, songs_by_title):
    track = supysonic.tracks[2]
    size = track.path.stat().st_size
    past = client.proxy_stream(songs_by_title[track.title].id, f"bytes={size + 10}-")
    assert past.status == 416
    assert past.headers.get("content-range") == f"bytes */{size}"
    b"".join(past.body)


def test_a_wrong_path_prefix_is_not_a_subsonic_server(supysonic):
    with pytest.raises(NotSubsonicServerError, match=r"/not-here does not answer as a Subsonic server \(HTTP 404"):
        connect(parse_server(supysonic.url + "/not-here"), PASSWORD)


def test_a_server_that_goes_down_mid_session_is_one_line(supysonic):
    """A second server process on the same library, stopped while a client is connected to it."""
    second = Supysonic(supysonic.folder, USER, PASSWORD)
    second.start()
    try:
        session = connect(parse_server(second.url), PASSWORD)
        song = next(session.iter_songs())
    finally:
        second.stop()
    with session, pytest.raises(ServerUnreachableError, match="is unreachable") as caught:
        session.download_song(song.id)
    assert_secret_free(caught.value, PASSWORD)


def test_a_crash_while_storing_a_password_leaves_the_old_store_or_the_new(tmp_path):
    """Killed (SIGKILL) at each write, fsync and rename in turn: the store reads back whole, 0600, with the
    old password or the new one, and holds no other file than a 0600 temp file."""
    store = tmp_path / "config" / "passwords.json"
    server = parse_server("http://alice@a:1")
    script = ("import sys; from pathlib import Path; from music_mood.subsonic import parse_server, store_password;"
              "store_password(parse_server('http://alice@a:1'), 'new ♪', Path(sys.argv[1]))")

    def run(**env):
        return subprocess.run([sys.executable, "-c", script, str(store)], cwd=ROOT, capture_output=True,
                              env={**os.environ, **env}, timeout=60)

    log = tmp_path / "points.log"
    store_password(server, "old", store)
    assert run(**{CRASH_LOG_ENV: str(log)}).returncode == 0
    points = log.read_text(encoding="utf-8").splitlines()
    assert len(points) >= 4, points  # write, fsync, rename, fsync of the folder
    for number in range(1, len(points) + 1):
        store_password(server, "old", store)
        assert run(**{CRASH_AT_ENV: str(number)}).returncode == -signal.SIGKILL
        assert stored_password(server, store) in ("old", "new ♪")
        for left in store.parent.iterdir():
            assert stat.S_IMODE(left.stat().st_mode) == 0o600, left
    assert stored_password(server, store) == "new ♪"  # killed after the rename: the new store stays


def test_a_server_that_redirects_is_told_to_be_given_the_other_address():
    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(301)
            self.send_header("Location", "https://music.example.org" + self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        with pytest.raises(NotSubsonicServerError, match=r"HTTP 301 .*it redirects") as caught:
            connect(parse_server(f"http://alice@127.0.0.1:{httpd.server_address[1]}"), PASSWORD)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert_secret_free(caught.value, PASSWORD)
