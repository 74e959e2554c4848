"""Soundtracks of a library whose tracks include songs of a real Supysonic server (tests/server_library.py): a
server song's stretch is downloaded once per render into memory and mixed as a file's would be; the command line
renders and saves such a soundtrack; a server that fails is one line and writes nothing."""
from __future__ import annotations

import json
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

import recommend as recommend_cli
from music_mood.audio import decode_stretches
from music_mood.library import LibraryPaths, load_database
from music_mood.mix import RenderError, mix_soundtrack
from music_mood.remote import ServerConnections
from music_mood.subsonic import PASSWORD_ENV, connect, parse_server
from tests.plan_factory import hand_made_plan
from tests.server_library import PASSWORD, SERVER_GENRE, move_to_servers, start_server

SR = 44100


@pytest.fixture(scope="module")
def server(tmp_path_factory, sample_tracks):
    """One Supysonic for the module, holding two of the built library's files."""
    supysonic = start_server(tmp_path_factory.mktemp("supysonic"), sample_tracks[::5][:2], "Harbour")
    yield supysonic
    supysonic.stop()


@pytest.fixture
def library(library_copy, server, monkeypatch, sample_tracks) -> Path:
    """The built library with its two files of the server turned into the server's songs (and gone from disk)."""
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    move_to_servers(library_copy, [server])
    return library_copy


def original(sample_tracks, title: str, server) -> Path:
    """The sample file a server song was copied from (the server's copy differs in its tags only)."""
    name = next(track.path.name for track in server.tracks if track.title == title)
    return next(track for track in sample_tracks if track.name == name)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    n = min(len(a), len(b))
    return float(np.corrcoef(a[:n].ravel(), b[:n].ravel())[0, 1])


def test_a_plan_with_a_server_song_mixes_its_stretches_downloaded_once(library, server, sample_tracks):
    db = load_database(LibraryPaths.at(library))
    song = next(t for t in db.tracks if t.get("song_id"))
    local = next(t for t in db.tracks if not t.get("song_id"))
    assert not (library / song["file_path"]).exists()  # only its server can give it
    # Three scenes of 4 s: the server song from 5 s, a file, the server song again from 20 s.
    plan = hand_made_plan(library, [song["file_path"], local["file_path"], song["file_path"]], ["unused.png"] * 6,
                          2.0, 2, track_start_s=[5.0, 5.0, 20.0])
    for scene in (plan.scenes[0], plan.scenes[2]):
        scene.pieces[0].source, scene.pieces[0].song_id = song["source"], song["song_id"]
    downloads = []
    with closing(ServerConnections()) as servers:
        fetch = servers.song_audio
        servers.song_audio = lambda track: downloads.append(track["song_id"]) or fetch(track)
        mix = mix_soundtrack(plan, SR, servers=servers)
    assert downloads == [song["song_id"]]  # one download for both of its pieces
    assert mix.shape == (round(plan.total_s * SR), 2)
    source = original(sample_tracks, song["title"], server)
    # Away from the fades and cross-fades, the mix is the song's own stretch (scaled by its level match).
    for at_s, track_s in ((1.0, 6.0), (9.0, 21.0)):
        own = decode_stretches(source, [(track_s, track_s + 2.0)], SR)[0]
        assert correlation(mix[round(at_s * SR):round((at_s + 2.0) * SR)], own) > 0.95, at_s
    # ...and not merely music: the file's piece does not correlate with the song there.
    other = decode_stretches(source, [(10.0, 12.0)], SR)[0]
    assert abs(correlation(mix[round(5.0 * SR):round(7.0 * SR)], other)) < 0.5


def test_a_server_song_without_connections_or_password_is_one_render_error(library, monkeypatch):
    db = load_database(LibraryPaths.at(library))
    song = next(t for t in db.tracks if t.get("song_id"))
    local = next(t for t in db.tracks if not t.get("song_id"))
    plan = hand_made_plan(library, [song["file_path"], local["file_path"]], ["unused.png"] * 2, 3.0, 1)
    piece = plan.scenes[0].pieces[0]
    piece.source, piece.song_id, piece.title = song["source"], song["song_id"], song["title"]
    with pytest.raises(RenderError, match="no connection to its servers"):
        mix_soundtrack(plan, SR)
    monkeypatch.setenv(PASSWORD_ENV, "Zq-not-it-9")
    with closing(ServerConnections()) as servers, pytest.raises(RenderError) as failed:
        mix_soundtrack(plan, SR, servers=servers)
    message = str(failed.value)
    assert message.startswith(f"cannot download “{song['title']}”: {song['source']} refused the user name")
    assert "\n" not in message and "Zq-not-it-9" not in message


def _cli(call_cli, checkpoints, *args, **kwargs):
    return call_cli(recommend_cli.main, *args, "--blip-model", checkpoints["blip"], "--clap-model", checkpoints["clap"],
                    **kwargs)


def test_cli_renders_a_soundtrack_of_server_songs_and_saves_it_on_the_server(library, server, checkpoints, photos,
                                                                             call_cli, sample_tracks, tmp_path):
    album = [str(photos[name]) for name in ("coffee.png", "chelsea.png", "rocket.jpg")]
    out = tmp_path / "trip.wav"
    done = _cli(call_cli, checkpoints, *album, "--soundtrack", "--json", "--seconds-per-photo", "3", "--genre",
                SERVER_GENRE, "--out", out, "--save-playlist", "Trip ♪")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    pieces = [piece for scene in plan["scenes"] for piece in scene["pieces"]]
    assert pieces and all(piece["song_id"] and piece["source"] == server.url for piece in pieces)
    first = pieces[0]
    mixed = decode_stretches(out, [(1.0, 2.5)], SR)[0]
    own = decode_stretches(original(sample_tracks, first["title"], server),
                           [(first["track_start_s"] + 1.0, first["track_start_s"] + 2.5)], SR)[0]
    assert correlation(mixed, own) > 0.9
    # The soundtrack's songs, in play order and each once, are the playlist on the server; no M3U8 was written.
    with connect(parse_server(server.url), PASSWORD) as client:
        [listed] = [p for p in client.list_playlists() if p["name"] == "Trip ♪"]
        assert client.get_playlist(str(listed["id"])).song_ids == list(dict.fromkeys(p["song_id"] for p in pieces))
    assert not (library / "playlists").exists()
    assert "Saved the playlist 'Trip ♪': " in done.stderr and f"on the server {server.url}" in done.stderr


def test_cli_a_server_that_fails_is_one_error_line_and_no_file(library, checkpoints, photos, call_cli, tmp_path):
    album = [str(photos[name]) for name in ("coffee.png", "chelsea.png")]
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "trip.wav"
    done = _cli(call_cli, checkpoints, *album, "--soundtrack", "--seconds-per-photo", "3", "--genre", SERVER_GENRE,
                "--out", out, env_extra={PASSWORD_ENV: "not the password"})
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "cannot download" in errors[0], done.stderr
    assert "Traceback" not in done.stderr and "not the password" not in done.stderr
    assert list(out.parent.iterdir()) == []


def test_the_pages_slideshow_renders_a_server_song_and_serves_no_address(library, photos, tmp_path):
    from music_mood.serve import RenderFolders
    from music_mood.slideshows import SLIDESHOW_FILES, render_slideshow_files

    db = load_database(LibraryPaths.at(library))
    song = next(t for t in db.tracks if t.get("song_id"))
    local = next(t for t in db.tracks if not t.get("song_id"))
    plan = hand_made_plan(library, [local["file_path"], song["file_path"]],
                          [photos["coffee.png"], photos["chelsea.png"]], 2.0, 1)
    piece = plan.scenes[1].pieces[0]
    piece.source, piece.song_id, piece.title, piece.artist = song["source"], song["song_id"], song["title"], "Ana"
    piece.track_id = song["id"]
    (tmp_path / "renders").mkdir()
    renders = RenderFolders(tmp_path / "renders")
    with closing(ServerConnections()) as servers:
        slideshow = render_slideshow_files(renders, plan, servers=servers)
    folder = renders.folder(slideshow.token)
    served = (folder / SLIDESHOW_FILES["json"]).read_text(encoding="utf-8")
    assert song["song_id"] in served and "127.0.0.1" not in served and "carol" not in served
    assert [p["file_path"] for s in json.loads(served)["scenes"] for p in s["pieces"]] == [local["file_path"],
                                                                                         song["id"]]
    playlist = (folder / SLIDESHOW_FILES["m3u8"]).read_text(encoding="utf-8").splitlines()
    assert local["file_path"] in playlist  # the file as an entry; the song as a comment, not a path
    assert [line for line in playlist if song["song_id"] in line] == [
        f"# Ana - {song['title']}: a song of a Subsonic server (song id {song['song_id']}), 5.000 s to 7.000 s"]
    mixed = decode_stretches(folder / SLIDESHOW_FILES["m4a"], [(2.8, 3.5)], SR)[0]
    assert float(np.sqrt(np.mean(mixed ** 2))) > 0.01  # the server's piece is music, not silence
