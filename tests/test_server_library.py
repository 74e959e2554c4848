"""A Subsonic server as a library source (music_to_vector.py --add-source http://USER@HOST:PORT), against a real
Supysonic on 127.0.0.1: the password is checked and stored once (0600, outside the library, never printed), a build
lists the songs, downloads each new one once into memory and embeds it with the server's tags, a re-run downloads
nothing, a song gone from the server is dropped, one that fails to download is a warning retried by the next run,
a server that is down stops the run with one line and changes nothing, and --remove-source takes it all out."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import mutagen
import pytest

import music_to_vector as mtv
from music_mood.library import LibraryPaths, committed_state, load_database
from music_mood.remote import server_file_path
from music_mood.sources import committed_sources
from music_mood.subsonic import CONFIG_ENV, PASSWORD_ENV, SubsonicClient, password_store_path
from tests.subsonic_server import Supysonic

USER = "alice"
PASSWORD = "pä&ss=wörd? #%+ ♪"
TAGS = [
    {"title": "Morning Light", "artist": "Ana Lima", "album": "Harbour", "genre": "Acoustic"},
    {"title": "Quiet Harbour", "artist": "Ana Lima", "album": "Harbour", "genre": "Acoustic"},
    {"title": "Neon Run", "artist": "The Pulse", "album": "Neon", "genre": "Electronic"},
    {"title": "Last Light", "artist": "The Pulse", "album": "Neon", "genre": "Electronic"},
]


@pytest.fixture
def server(tmp_path, sample_tracks):
    """A Supysonic of its own for the test: four real tracks with TAGS, the first also with a MOOD tag."""
    supysonic = Supysonic(tmp_path / "supysonic", USER, PASSWORD)
    supysonic.configure()
    supysonic.add_tracks(list(zip(sample_tracks[2::7], TAGS)))
    tagged = mutagen.File(supysonic.tracks[0].path)
    tagged["mood"] = ["Dreamy"]
    tagged.save()
    supysonic.set_up_library()
    supysonic.start()
    yield supysonic
    supysonic.stop()


@pytest.fixture
def config(tmp_path, monkeypatch) -> Path:
    """The user's config folder (where the password is stored), the test's own."""
    folder = tmp_path / "config"
    monkeypatch.setenv(CONFIG_ENV, str(folder))
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    return folder


@pytest.fixture
def downloads(monkeypatch) -> list[str]:
    """The song ids downloaded, in order, by any client of this process."""
    calls, download = [], SubsonicClient.download_song

    def counted(self, song_id, *args, **kwargs):
        calls.append(song_id)
        return download(self, song_id, *args, **kwargs)

    monkeypatch.setattr(SubsonicClient, "download_song", counted)
    return calls


def _rescan(server: Supysonic) -> None:
    server._run("folder", "scan", "--foreground", "music")


def _secret_free(*texts: str) -> None:
    for text in texts:
        assert PASSWORD not in text and PASSWORD.encode().hex() not in text


def test_a_server_is_added_built_followed_and_removed(isolated_library, server, config, downloads, call_cli,
                                                      checkpoints, sample_tracks):
    library, paths = isolated_library, LibraryPaths.at(isolated_library)

    def build(**env):
        done = call_cli(mtv.main, "--library", library, "--clap-model", checkpoints["clap"], env_extra=env)
        _secret_free(done.stdout, done.stderr)
        return done

    done = call_cli(mtv.main, "--library", library, "--add-source", server.url + "/",
                    env_extra={PASSWORD_ENV: PASSWORD})
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"source  subsonic  {server.url}\n"
    store = password_store_path()
    assert store.is_relative_to(config) and stat.S_IMODE(store.stat().st_mode) == 0o600
    assert json.loads(store.read_text(encoding="utf-8"))["servers"] == {server.url: PASSWORD}
    assert [(s["kind"], s["path"]) for s in committed_sources(paths)] == [("subsonic", server.url)]
    assert PASSWORD not in paths.metadata.read_text(encoding="utf-8")

    before = {p.relative_to(library) for p in library.rglob("*")}
    done = build()  # no password in the environment: the stored one
    assert done.returncode == 0, done.stderr
    assert "4 added, 0 failed" in done.stderr
    db = load_database(paths)
    by_title = {t["title"]: t for t in db.tracks}
    assert sorted(by_title) == sorted(t["title"] for t in TAGS)
    songs = {s.title: s for s in _client(server).iter_songs()}
    for tags in TAGS:
        record = by_title[tags["title"]]
        song = songs[tags["title"]]
        assert (record["artist"], record["album"], record["genre"]) == (tags["artist"], tags["album"], tags["genre"])
        assert record["source"] == server.url and record["song_id"] == song.id
        assert record["file_path"] == server_file_path(server.url, song.id)
        assert record["duration_s"] == pytest.approx(song.duration, abs=1.5) and record["segment_count"] >= 1
    assert by_title["Morning Light"]["mood"] == "Dreamy"  # the file's own mood tag
    assert sorted(downloads) == sorted(s.id for s in songs.values())
    # Downloads are decoded from memory: the library folder gained its database files, no audio.
    added = {p for p in (p.relative_to(library) for p in library.rglob("*")) if p not in before}
    assert not [p for p in added if p.suffix in (".opus", ".mp3", ".tmp", ".part")], added

    listing = call_cli(mtv.main, "--library", library, "--list-sources")
    assert listing.stdout.splitlines()[1].startswith(f"subsonic  {server.url}  4 tracks, last scan 20")
    _secret_free(listing.stdout, listing.stderr)

    # A re-run lists the server, downloads nothing and commits nothing.
    state, downloads[:] = committed_state(paths), []
    done = build()
    assert done.returncode == 0 and "0 added" in done.stderr and downloads == []
    assert committed_state(paths) == state

    # A song deleted from the server (and rescanned) is dropped, a song put on it is added, and a song that cannot
    # be downloaded as audio (its file emptied on the server's disk) is one warning, which the next run retries.
    deleted = server.tracks[2]
    deleted.path.unlink()
    server.add_tracks([(sample_tracks[5], {"title": "New Song", "artist": "Zoë", "album": "New", "genre": "Jazz"}),
                       (sample_tracks[6], {"title": "Broken", "artist": "Zoë", "album": "New", "genre": "Jazz"})])
    _rescan(server)
    failing = server.tracks[-1]
    failing_bytes = failing.path.read_bytes()
    failing.path.write_bytes(b"")
    done = build()
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.startswith("Warning: ")]
    assert len(warnings) == 1 and failing.title in warnings[0] and "next run tries again" in warnings[0], warnings
    assert f"{server_file_path(server.url, songs[deleted.title].id)} is no longer there" in done.stderr
    db = load_database(paths)
    assert deleted.title not in db.column("title") and "New Song" in db.column("title")
    failing.path.write_bytes(failing_bytes)
    done = build()
    assert done.returncode == 0 and failing.title in load_database(paths).column("title"), done.stderr

    # --remove of a server track leaves the server alone; later builds leave it out without downloading it again.
    removing = by_title["Last Light"]
    done = call_cli(mtv.main, "--library", library, "--remove", removing["id"])
    assert done.returncode == 0 and "stays in its source" in done.stdout, done.stderr
    downloads[:] = []
    done = build()
    assert "0 added" in done.stderr and removing["sha256"] not in load_database(paths).column("sha256")
    assert downloads == []
    done = call_cli(mtv.main, "--library", library, "--restore", removing["file_path"])
    assert done.returncode == 0 and done.stdout == f"restored  {removing['file_path']}\n", done.stderr
    assert "1 added" in build().stderr and removing["sha256"] in load_database(paths).column("sha256")

    # A song moved on the server's disk comes back under a new id: downloaded once more, and followed, not added.
    moving = server.tracks[0]
    old_record = next(t for t in load_database(paths).tracks if t["title"] == moving.title)
    (server.music / "Moved").mkdir()
    moving.path.rename(server.music / "Moved" / moving.path.name)
    _rescan(server)
    done = build()
    assert done.returncode == 0 and "0 added" in done.stderr, done.stderr
    assert f"{old_record['file_path']} was moved to {server.url}#song=" in done.stderr
    followed = next(t for t in load_database(paths).tracks if t["title"] == moving.title)
    assert followed["song_id"] != old_record["song_id"] and followed["sha256"] == old_record["sha256"]
    assert followed["file_path"] == server_file_path(server.url, followed["song_id"])

    done = call_cli(mtv.main, "--library", library, "--remove-source", server.url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"removed source  {server.url}  (")
    assert len(load_database(paths)) == 0 and committed_sources(paths) == []
    assert json.loads(store.read_text(encoding="utf-8"))["servers"] == {}


def _client(server: Supysonic):
    from music_mood.subsonic import connect, parse_server

    return connect(parse_server(server.url), PASSWORD)


def test_a_wrong_password_or_a_server_down_is_one_line_and_changes_nothing(isolated_library, server, config,
                                                                          call_cli, checkpoints):
    library, paths = isolated_library, LibraryPaths.at(isolated_library)
    done = call_cli(mtv.main, "--library", library, "--add-source", server.url,
                    env_extra={PASSWORD_ENV: "not the password"})
    assert done.returncode == 1 and done.stdout == "" and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("Error: ") and "not the password" not in done.stderr
    assert not paths.metadata.exists() and not password_store_path().exists()

    assert call_cli(mtv.main, "--library", library, "--add-source", server.url,
                    env_extra={PASSWORD_ENV: PASSWORD}).returncode == 0
    assert call_cli(mtv.main, "--library", library, "--clap-model", checkpoints["clap"]).returncode == 0
    files = {p: p.read_bytes() for p in library.glob("music_database*")}
    server.stop()
    done = call_cli(mtv.main, "--library", library, "--clap-model", checkpoints["clap"])
    assert done.returncode == 1 and done.stdout == "", done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and server.url in errors[0] and "nothing was changed" in errors[0], done.stderr
    assert "Traceback" not in done.stderr
    _secret_free(done.stderr)
    assert {p: p.read_bytes() for p in library.glob("music_database*")} == files


def test_a_server_address_that_is_no_source_or_one_already_is_refused_in_one_line(isolated_library, server, config,
                                                                                  call_cli):
    library = isolated_library
    assert call_cli(mtv.main, "--library", library, "--add-source", server.url,
                    env_extra={PASSWORD_ENV: PASSWORD}).returncode == 0
    for address, reason in [(server.url, "already a source"), ("http://127.0.0.1:1", "name the user"),
                            (f"http://{USER}:secret@127.0.0.1:{server.port}", "put no password in the address")]:
        done = call_cli(mtv.main, "--library", library, "--add-source", address, env_extra={PASSWORD_ENV: PASSWORD})
        assert done.returncode == 1 and done.stderr.count("\n") == 1 and reason in done.stderr, done.stderr
        assert "secret" not in done.stderr
    done = call_cli(mtv.main, "--library", library, "--remove-source", f"http://bob@127.0.0.1:{server.port}")
    assert done.returncode == 1 and "is not a source of this library" in done.stderr
    assert os.environ.get(PASSWORD_ENV) is None


def test_the_app_start_up_reads_the_server_and_serves_what_it_has_when_the_server_is_down(
        isolated_library, server, config, call_cli, checkpoints, capfd):
    import app
    from music_mood.live import LiveLibrary

    library, paths = isolated_library, LibraryPaths.at(isolated_library)
    assert call_cli(mtv.main, "--library", library, "--add-source", server.url,
                    env_extra={PASSWORD_ENV: PASSWORD}).returncode == 0
    live = LiveLibrary(paths, checkpoints["clap"])
    capfd.readouterr()
    app.prepare_library(live)
    assert "4 added, 0 failed" in capfd.readouterr().err
    assert sorted(live.current().column("title")) == sorted(t["title"] for t in TAGS)

    state = committed_state(paths)
    server.stop()
    app.prepare_library(live)
    err = capfd.readouterr().err
    assert [line for line in err.splitlines() if line.startswith(("Warning: ", "Error: "))] == [
        next(line for line in err.splitlines() if line.startswith("Warning: cannot list the songs of " + server.url))]
    assert "serving the library as it is" in err and committed_state(paths) == state and len(live.current()) == 4


def _library_state(paths: LibraryPaths) -> tuple:
    db = load_database(paths) if paths.metadata.exists() else None
    return (tuple(s["path"] for s in committed_sources(paths)),
            tuple(sorted(db.column("sha256"))) if db is not None else ())


@pytest.mark.parametrize("command", ["--add-source", "build", "--remove-source"])
def test_a_kill_at_each_crash_point_of_a_server_source_change_leaves_the_old_or_the_new_library(
        isolated_library, server, config, tmp_path, call_cli, checkpoints, command):
    """Adding a server, building from it and removing it, each killed at every crash point of its commit (and of
    the password store's write, for --add-source): the library loads as before the command or as after it, never
    in between, and the server's music is untouched. The runs are children forked with the builder imported."""
    import collections
    import shutil
    import signal

    from music_mood.storage import CRASH_AT_ENV, CRASH_LOG_ENV
    from tests import forked

    library, paths = isolated_library, LibraryPaths.at(isolated_library)
    env = {PASSWORD_ENV: PASSWORD}
    if command != "--add-source":
        assert call_cli(mtv.main, "--library", library, "--add-source", server.url, env_extra=env).returncode == 0
    if command == "--remove-source":
        assert call_cli(mtv.main, "--library", library, "--clap-model", checkpoints["clap"]).returncode == 0
    served = {p: p.read_bytes() for p in server.music.rglob("*") if p.is_file()}
    base, base_config = tmp_path / "base", tmp_path / "base-config"
    shutil.copytree(library, base)
    if config.exists():  # the password store: each run starts from it as it was, as from the library
        shutil.copytree(config, base_config)
    old = _library_state(paths)
    args = ["--library", library, "--clap-model", checkpoints["clap"],
            *([] if command == "build" else [command, server.url])]
    log = tmp_path / "points.txt"
    done = forked.run("music_to_vector", *args, folder=tmp_path, env_extra={**env, CRASH_LOG_ENV: str(log)})
    assert done.returncode == 0, done.stderr
    new = _library_state(paths)
    assert new != old
    points = [line.split("\t", 1) for line in log.read_text().splitlines()]
    assert len(points) >= 3, points
    seen = collections.Counter()
    for number, what in points:
        shutil.rmtree(library)
        shutil.copytree(base, library)
        shutil.rmtree(config, ignore_errors=True)
        if base_config.exists():
            shutil.copytree(base_config, config)
        killed = forked.run("music_to_vector", *args, folder=tmp_path, env_extra={**env, CRASH_AT_ENV: number})
        assert killed.returncode == -signal.SIGKILL, f"not killed at {what}: {killed.stderr}"
        state = _library_state(paths)
        assert state in (old, new), f"after a kill at {what}"
        seen["old" if state == old else "new"] += 1
    assert seen["old"] and seen["new"], seen
    assert {p: p.read_bytes() for p in server.music.rglob("*") if p.is_file()} == served
    print(f"{command}: killed at each of {len(points)} crash points; left {dict(seen)}")
