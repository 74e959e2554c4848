"""File moves that cannot be made (issue 20, part 2): a destination that cannot be created refuses the change in one
line before anything is committed; a move that fails after its commit (a permission changed, a disk filled up in
between) stays pending in the commit, readers load and serve the library with one warning naming it, and the next
writer finishes it once the cause is gone."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import music_to_vector as mtv
import recommend
from music_mood.audio import file_sha256
from music_mood.library import LibraryPaths, load_database
from music_mood.live import LiveLibrary
from tests.conftest import ROOT, put_in_new_music
from tests.test_edit import _tree

REMOVING = "processed_music/calm/calm_acoustic_1.opus"


def _readers_serve(library: Path, call_cli, checkpoints, tracks: int) -> list[str]:
    """--list, recommend.py --like and the app's LiveLibrary all load the library; returns --list's stderr lines."""
    listed = call_cli(mtv.main, "--library", library, "--list")
    assert listed.returncode == 0, listed.stderr
    assert len(listed.stdout.strip().splitlines()) > tracks
    other = load_database(LibraryPaths.at(library)).tracks[0]["id"]
    liked = call_cli(recommend.main, "--library", library, "--clap-model", checkpoints["clap"], "--like", other,
                     "--json")
    assert liked.returncode == 0, liked.stderr
    assert json.loads(liked.stdout.splitlines()[0])["results"]
    assert len(LiveLibrary(LibraryPaths.at(library), checkpoints["clap"]).current()) == tracks
    return listed.stderr.strip().splitlines()


def test_a_removal_whose_folder_is_a_file_is_refused_in_one_line(library_copy, call_cli, checkpoints):
    """`echo notes > LIBRARY/removed`, or removed/calm a file: --remove says so in one line, commits nothing, and
    the readers go on serving the library without a word."""
    for blocker in ("removed", "removed/calm"):
        (library_copy / blocker).parent.mkdir(exist_ok=True)
        (library_copy / blocker).write_text("notes\n")
        before = _tree(library_copy)
        done = call_cli(mtv.main, "--library", library_copy, "--remove", REMOVING)
        assert done.returncode == 1
        assert done.stdout == ""
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: cannot move "), lines
        assert f"{library_copy / blocker} is a file, not a folder" in lines[0]
        assert lines[0].endswith("; nothing was changed")
        assert _tree(library_copy) == before
        assert _readers_serve(library_copy, call_cli, checkpoints, 6) == []
        if blocker == "removed":
            (library_copy / blocker).unlink()


def test_a_build_whose_folder_is_a_file_leaves_that_file_waiting(library_copy, call_cli, checkpoints, sample_tracks):
    """processed_music/jazz is a file and new_music/jazz/x.opus waits: that file fails in one line and stays where it
    is; the others are added; nothing is left half done for the readers."""
    (library_copy / "processed_music" / "jazz").write_text("notes\n")
    waiting = put_in_new_music(library_copy, [sample_tracks[1]])[0]
    jazz = library_copy / "new_music" / "jazz" / "x.opus"
    jazz.parent.mkdir()
    shutil.copyfile(sample_tracks[2], jazz)

    done = call_cli(mtv.main, "--library", library_copy, "--clap-model", checkpoints["clap"])
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error")]
    assert errors == [(f"Error: {jazz}: cannot move it to {library_copy / 'processed_music/jazz/x.opus'}: "
                       f"{library_copy / 'processed_music/jazz'} is a file, not a folder (left where it is)")]
    assert "1 added, 1 failed, 7 tracks in the library." in done.stderr
    db = load_database(LibraryPaths.at(library_copy))
    assert file_sha256(jazz) not in db.column("sha256")
    assert f"processed_music/{waiting.parent.name}/{waiting.name}" in db.column("file_path")
    assert (library_copy / "processed_music" / "jazz").read_text() == "notes\n"
    assert _readers_serve(library_copy, call_cli, checkpoints, 7) == []


RENAMES = "rename,renameat,renameat2"


def test_a_move_that_fails_after_the_commit_stays_pending_until_a_writer_can_finish_it(library_copy, call_cli,
                                                                                       checkpoints, tmp_path):
    """strace fails the move's rename with EACCES: the removal is committed and its move pending. While its cause
    lasts (here removed/ became a file meanwhile), readers serve the library with one warning naming the move, a
    writer's commit keeps it pending, and a build does not take the file back; once the cause is gone, the next
    writer finishes it."""
    strace = shutil.which("strace")
    assert strace, "this test needs strace (apt-get install strace)"
    paths = LibraryPaths.at(library_copy)
    base = tmp_path / "base"
    shutil.copytree(library_copy, base)
    command = [sys.executable, str(ROOT / "music_to_vector.py"), "--library", str(library_copy), "--remove", REMOVING]
    trace = tmp_path / "trace.txt"
    done = subprocess.run([strace, "-f", "-qq", "-o", str(trace), "-e", f"trace={RENAMES}", *command],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    calls = [line for line in trace.read_text().splitlines() if "rename" in line and "resumed" not in line]
    move = next(n for n, line in enumerate(calls, 1) if "calm_acoustic_1.opus" in line and "removed/" in line)
    shutil.rmtree(library_copy)
    shutil.copytree(base, library_copy)

    done = subprocess.run([strace, "-f", "-qq", "-o", "/dev/null", "-e", f"trace={RENAMES}", "-e",
                           f"inject={RENAMES}:error=EACCES:when={move}+", *command], capture_output=True, text=True,
                          cwd=tmp_path)
    source, target = library_copy / REMOVING, library_copy / "removed/calm/calm_acoustic_1.opus"
    warning = f"Warning: {source} is still to be moved to {target} ("
    assert done.returncode == 0, done.stderr
    assert [line for line in done.stderr.splitlines() if line.startswith(("Warning", "Error"))] == [
        line for line in done.stderr.splitlines() if line.startswith(warning)], done.stderr
    assert "Permission denied" in done.stderr
    assert source.exists() and not target.exists()
    removed_sha = file_sha256(source)
    # The cause lasts (any load now would make the move): removed/ became a file.
    shutil.rmtree(library_copy / "removed")
    (library_copy / "removed").write_text("notes\n")
    assert removed_sha not in load_database(paths).column("sha256")
    lines = _readers_serve(library_copy, call_cli, checkpoints, 5)
    assert len(lines) == 1 and lines[0].startswith(warning) and "removed is a file, not a folder" in lines[0], lines

    other = load_database(paths).tracks[0]
    done = call_cli(mtv.main, "--library", library_copy, "--set-mood", other["id"], "sleepy")
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines()[0].startswith(warning)
    assert json.loads(paths.metadata.read_text())["commit"]["moves"] == [[REMOVING, target.relative_to(library_copy)
                                                                         .as_posix()]]
    built = call_cli(mtv.main, "--library", library_copy, "--clap-model", checkpoints["clap"])
    assert built.returncode == 0, built.stderr
    assert removed_sha not in load_database(paths).column("sha256")
    assert source.exists()

    (library_copy / "removed").unlink()  # the cause is gone: the next writer finishes the move
    done = call_cli(mtv.main, "--library", library_copy, "--set-mood", other["id"], "calm")
    assert done.returncode == 0 and "Warning" not in done.stderr, done.stderr
    assert not source.exists() and file_sha256(target) == removed_sha
    assert _readers_serve(library_copy, call_cli, checkpoints, 5) == []
    assert not [p.name for p in library_copy.iterdir() if p.name.startswith(".")]
