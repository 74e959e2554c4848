"""Folders indexed in place (music_to_vector.py --add-source / --list-sources / --remove-source / --restore): a
read-only copy of real tracks is added, followed and dropped by every build, and never written: the same
checksums, mtimes and listing after every command; a kill at each write of a source change leaves the old library
or the new one; a source's files are served only as tracks of the library."""
from __future__ import annotations

import collections
import hashlib
import shutil
import signal
import stat
from pathlib import Path

import pytest

import music_to_vector as mtv
from music_mood.audio import file_sha256
from music_mood.library import LibraryPaths, committed_state, load_database
from music_mood.sources import committed_sources
from music_mood.storage import CRASH_AT_ENV, CRASH_LOG_ENV
from tests import forked


def _snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry below `folder` (folders too): its kind, mode, mtime_ns, and a file's size and sha256."""
    out = {}
    for path in sorted([folder, *folder.rglob("*")]):
        st = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
        out[path.relative_to(folder).as_posix()] = (stat.S_IFMT(st.st_mode), st.st_mode, st.st_mtime_ns,
                                                     st.st_size if digest else None, digest)
    return out


def _set_read_only(folder: Path, read_only: bool = True) -> None:
    for path in sorted([folder, *folder.rglob("*")], reverse=True):
        path.chmod((0o555 if path.is_dir() else 0o444) if read_only else (0o755 if path.is_dir() else 0o644))


@pytest.fixture
def music(tmp_path, sample_tracks) -> Path:
    """A user's ~/Music: four real tracks, two in a folder named after their mood, read-only."""
    folder = tmp_path / "Music"
    for i, track in enumerate(sample_tracks[1::7]):
        target = folder / (track.parent.name if i < 2 else "") / f"{i} {track.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(track, target)
    _set_read_only(folder)
    yield folder
    _set_read_only(folder, False)


def _build(call_cli, library: Path, checkpoints, *extra):
    return call_cli(mtv.main, "--library", library, "--clap-model", checkpoints["clap"], *extra)


def test_a_read_only_folder_is_indexed_in_place_and_never_written(isolated_library, music, call_cli, checkpoints):
    library, untouched = isolated_library, _snapshot(music)
    paths = LibraryPaths.at(library)

    done = call_cli(mtv.main, "--library", library, "--add-source", music)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"source  folder  {music}\n"
    assert [s["path"] for s in committed_sources(paths)] == [music.as_posix()]
    assert _snapshot(music) == untouched

    done = _build(call_cli, library, checkpoints)
    assert done.returncode == 0, done.stderr
    assert "4 added, 0 failed" in done.stderr and _snapshot(music) == untouched
    db = load_database(paths)
    assert sorted(t["file_path"] for t in db.tracks) == sorted(p.as_posix() for p in music.rglob("*.opus"))
    assert {t["source"] for t in db.tracks} == {music.as_posix()}
    by_name = {Path(t["file_path"]).name: t for t in db.tracks}
    for path in music.rglob("*.opus"):  # a sub-folder named after a mood gives the mood, as in processed_music/
        assert by_name[path.name]["mood"] == (path.parent.name if path.parent != music else "")
    assert not (library / "processed_music").exists() or not any((library / "processed_music").iterdir())

    # A re-run embeds nothing and commits nothing.
    state = committed_state(paths)
    done = _build(call_cli, library, checkpoints)
    assert done.returncode == 0 and "0 added" in done.stderr and committed_state(paths) == state
    assert _snapshot(music) == untouched

    listing = call_cli(mtv.main, "--library", library, "--list-sources")
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0] == f"library  {library / 'processed_music'}  0 tracks"
    assert lines[1].startswith(f"folder  {music}  4 tracks, last scan 20") and len(lines) == 2

    # The user renames and deletes files in their folder: the library follows, nothing is embedded again.
    _set_read_only(music, False)
    old, new = sorted(music.rglob("*.opus"))[0], music / "renamed.opus"
    old.rename(new)
    gone = sorted(music.rglob("*.opus"))[0]
    gone_sha = hashlib.sha256(gone.read_bytes()).hexdigest()
    gone.unlink()
    _set_read_only(music)
    untouched = _snapshot(music)
    done = _build(call_cli, library, checkpoints)
    assert done.returncode == 0, done.stderr
    assert "0 added" in done.stderr and f"was moved to {new}" in done.stderr and "no longer there" in done.stderr
    db = load_database(paths)
    assert new.as_posix() in db.column("file_path") and gone_sha not in db.column("sha256") and len(db) == 3
    assert _snapshot(music) == untouched

    # --remove of a source track keeps its file, and later builds leave it out until --restore.
    removing = db.tracks[0]
    done = call_cli(mtv.main, "--library", library, "--remove", removing["id"])
    assert done.returncode == 0, done.stderr
    assert "stays in its source" in done.stdout and _snapshot(music) == untouched
    done = _build(call_cli, library, checkpoints)
    assert "0 added" in done.stderr and removing["sha256"] not in load_database(paths).column("sha256")
    done = call_cli(mtv.main, "--library", library, "--restore", removing["file_path"])
    assert done.returncode == 0 and done.stdout == f"restored  {removing['file_path']}\n", done.stderr
    done = _build(call_cli, library, checkpoints)
    assert "1 added" in done.stderr and removing["sha256"] in load_database(paths).column("sha256")
    assert _snapshot(music) == untouched

    done = call_cli(mtv.main, "--library", library, "--remove-source", music)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"removed source  {music}  (3 tracks; no file touched)\n"
    assert len(load_database(paths)) == 0 and committed_sources(paths) == []
    assert _snapshot(music) == untouched


def test_a_folder_that_cannot_be_a_source_is_refused_in_one_line(isolated_library, music, call_cli, tmp_path):
    library = isolated_library
    (library / "new_music" / "calm").mkdir(parents=True)
    (tmp_path / "a file.txt").write_text("x")
    assert call_cli(mtv.main, "--library", library, "--add-source", music).returncode == 0
    for folder, reason in [(tmp_path / "nowhere", "does not exist"), (tmp_path / "a file.txt", "is not a folder"),
                           (library / "new_music" / "calm", "the library's own folder"),
                           (tmp_path, "the library's own folder"), (music, "is already a source"),
                           (music / "calm", "overlaps the source")]:
        before = (library / "music_database_metadata.json").read_bytes()
        done = call_cli(mtv.main, "--library", library, "--add-source", folder)
        assert done.returncode == 1 and done.stdout == ""
        assert done.stderr.count("\n") == 1 and done.stderr.startswith("Error: ") and reason in done.stderr
        assert (library / "music_database_metadata.json").read_bytes() == before
    done = call_cli(mtv.main, "--library", library, "--remove-source", tmp_path / "nowhere")
    assert done.returncode == 1 and "is not a source of this library" in done.stderr


def test_a_copy_in_a_source_of_a_listed_track_is_not_embedded_again(library_copy, tmp_path, call_cli, checkpoints,
                                                                     monkeypatch):
    paths = LibraryPaths.at(library_copy)
    listed = load_database(paths).tracks[2]
    folder = tmp_path / "Music"
    folder.mkdir()
    shutil.copyfile(library_copy / listed["file_path"], folder / "copy.opus")
    assert call_cli(mtv.main, "--library", library_copy, "--add-source", folder).returncode == 0
    done = _build(call_cli, library_copy, checkpoints)
    assert done.returncode == 0 and "0 added" in done.stderr
    note = f"{folder / 'copy.opus'} is already in the library as {listed['file_path']}"
    assert note in done.stderr and len(load_database(paths)) == 6  # a duplicate is a note, never a second track
    # The next run does not hash it again (its size and mtime are unchanged: the scan cache) and commits nothing.
    import music_mood.sources as sources

    hashed, state = [], committed_state(paths)
    monkeypatch.setattr(sources, "file_sha256", lambda path: hashed.append(path) or "x")
    done = _build(call_cli, library_copy, checkpoints)
    assert done.returncode == 0 and note in done.stderr
    assert hashed == [] and committed_state(paths) == state


def test_a_source_file_is_served_only_as_a_track_of_the_library(library_copy, music, call_cli, checkpoints):
    from music_mood.live import LiveLibrary
    from music_mood.serve import track_response

    assert call_cli(mtv.main, "--library", library_copy, "--add-source", music).returncode == 0
    _set_read_only(music, False)
    (music / "secret.txt").write_text("private")
    assert _build(call_cli, library_copy, checkpoints).returncode == 0
    (music / "later.opus").write_bytes(b"not in the library")  # added after the build: not a track
    live = LiveLibrary(LibraryPaths.at(library_copy), checkpoints["clap"])
    track = next(t for t in live.current().tracks if t.get("source"))
    assert live.track_file(live.served_track(track["id"])) == Path(track["file_path"])
    assert track_response(live, track["id"]).status_code == 200
    for asked in [(music / "later.opus").as_posix(), (music / "secret.txt").as_posix(),
                  f"{music}/calm/../later.opus", "/etc/passwd", "../../etc/passwd", track["file_path"],
                  file_sha256(music / "later.opus")[:16], file_sha256(music / "secret.txt")[:16]]:
        assert live.served_track(asked) is None and track_response(live, asked).status_code == 403, asked
    # A record that names a place outside the library's folders is not sent, whatever the metadata says.
    for forged in ["/etc/passwd", f"{music}/../{music.name}/secret.txt", "../outside.opus"]:
        assert live.track_file({**track, "file_path": forged}) is None, forged


def _library_state(paths: LibraryPaths) -> tuple:
    db = load_database(paths)
    return tuple(s["path"] for s in committed_sources(paths)), tuple(sorted(db.column("sha256")))


@pytest.mark.parametrize("command", ["--add-source", "build", "--remove-source"])
def test_a_kill_at_each_crash_point_of_a_source_change_leaves_the_old_or_the_new_library(
        isolated_library, music, tmp_path, call_cli, checkpoints, command):
    library, paths = isolated_library, LibraryPaths.at(isolated_library)
    if command != "--add-source":
        assert call_cli(mtv.main, "--library", library, "--add-source", music).returncode == 0
    if command == "--remove-source":
        assert _build(call_cli, library, checkpoints).returncode == 0
    untouched = _snapshot(music)
    base = tmp_path / "base"
    shutil.copytree(library, base)
    old = _library_state(paths)
    args = ["--library", library, "--clap-model", checkpoints["clap"],
            *([] if command == "build" else [command, music])]
    log = tmp_path / "points.txt"
    done = forked.run("music_to_vector", *args, folder=tmp_path, env_extra={CRASH_LOG_ENV: str(log)})
    assert done.returncode == 0, done.stderr
    new = _library_state(paths)
    assert new != old
    points = [line.split("\t", 1) for line in log.read_text().splitlines()]
    seen = collections.Counter()
    for number, what in points:
        shutil.rmtree(library)
        shutil.copytree(base, library)
        killed = forked.run("music_to_vector", *args, folder=tmp_path, env_extra={CRASH_AT_ENV: number})
        assert killed.returncode == -signal.SIGKILL, f"not killed at {what}: {killed.stderr}"
        state = _library_state(paths)
        assert state in (old, new), f"after a kill at {what}"
        seen["old" if state == old else "new"] += 1
        assert _snapshot(music) == untouched
    assert seen["old"] and seen["new"], seen
    assert not [p for p in music.rglob("*") if p.name.startswith(".")]
    print(f"{command}: killed at each of {len(points)} crash points; left {dict(seen)}")


@pytest.fixture(scope="module")
def source_app(built_library, tmp_path_factory, sample_tracks, clap_audio, checkpoints):
    """The page served in this process over a library with a read-only folder source of three real tracks, and a
    gradio_client of it; yields (client, the page's URL, the source folder)."""
    from gradio_client import Client

    from music_mood.build import build_library
    from music_mood.edit import add_source
    from music_mood.live import LiveLibrary
    from music_mood.models import BackgroundModels
    from music_mood.serve import track_routes
    from music_mood.web.page import build_app
    from tests.app_server import free_port

    root = tmp_path_factory.mktemp("source-app")
    library, folder = root / "library", root / "Music"
    shutil.copytree(built_library, library)
    for track in sample_tracks[3::9]:
        (folder / "calm").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(track, folder / "calm" / track.name)
    (folder / "not in the library.opus").write_bytes(sample_tracks[4].read_bytes()[:4096])
    _set_read_only(folder)
    paths = LibraryPaths.at(library)
    add_source(paths, folder)
    with pytest.MonkeyPatch.context() as scope:
        scope.setattr("music_mood.sources.find_audio_files",  # the torn copy above is no track: never read
                      lambda where: [p for p in sorted(where.rglob("*.opus")) if p.parent.name == "calm"])
        assert len(build_library(clap_audio, paths, progress=False).added) == 3
    live = LiveLibrary(paths, checkpoints["clap"])
    demo = build_app(live, BackgroundModels(checkpoints["blip"], checkpoints["clap"]))  # never loaded here
    demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True, ssr_mode=False,
                app_kwargs={"routes": track_routes(live)})  # as web/server.py serves the library's audio
    try:
        yield Client(demo.local_url, verbose=False), demo.local_url, folder
    finally:
        demo.close(verbose=False)
        _set_read_only(folder, False)


def test_a_source_track_is_recommended_and_played_through_the_app(source_app):
    import urllib.error
    import urllib.request
    from urllib.parse import quote

    client, url, folder = source_app
    untouched = _snapshot(folder)
    like = next(t for t in load_database(LibraryPaths.at(folder.parent / "library")).tracks if t.get("source"))
    result = client.predict(like=like["id"], topk=20, api_name="/more_like_this")  # no model needed
    from_source = [t for t in result["results"] if t["file_path"].startswith(folder.as_posix())]
    assert len(from_source) == 2 and len(result["results"]) == 8  # all but the track asked with
    for track in from_source:
        request = urllib.request.Request(url.rstrip("/") + track["audio_url"], headers={"Range": "bytes=0-99"})
        with urllib.request.urlopen(request) as response:
            assert response.status == 206 and response.read() == Path(track["file_path"]).read_bytes()[:100]
    unlisted = folder / "not in the library.opus"
    for asked in [quote(unlisted.as_posix()), quote(unlisted.as_posix().lstrip("/")),
                  quote((folder / "calm" / ".." / unlisted.name).as_posix()), file_sha256(unlisted)[:16]]:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url.rstrip("/") + "/track/" + asked)
        assert refused.value.code == 403
    assert _snapshot(folder) == untouched


def test_the_library_tab_lists_the_sources_with_their_track_counts(source_app):
    from music_mood.sources import source_lines
    from music_mood.web.views import sources_note

    _, _, folder = source_app
    library = folder.parent / "library"
    paths = LibraryPaths.at(library)
    note = sources_note(source_lines(paths, load_database(paths).tracks))
    assert f"- `library  {library / 'processed_music'}  6 tracks`" in note
    assert f"- `folder  {folder}  3 tracks, last scan 20" in note
    assert sources_note(source_lines(paths, [])[:1]) == ""  # a library without sources says nothing more
