"""A change to a library on a full disk (issue 20, part 3): refused in one line that says so, the old library left
byte for byte as it was and still loadable, in both storage forms (inline records, and a catalogue's SQLite table)."""
from __future__ import annotations

import errno
import shutil
import subprocess
from pathlib import Path

import pytest

import music_to_vector as mtv
from music_mood.library import LibraryPaths, load_database
from tests.conftest import store_as_table
from tests.test_edit import _tree


@pytest.fixture
def small_disk(tmp_path):
    """An 8 MB tmpfs mounted for this test (we run as root), unmounted after it."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)], capture_output=True,
                             text=True)
    assert mounted.returncode == 0, f"this test mounts a tmpfs (as root): {mounted.stderr}"
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


def _fill(disk: Path, free_pages: int) -> None:
    """Write a filler file until the disk refuses another byte, then give `free_pages` pages of 4 KB back."""
    with open(disk / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
        try:
            while True:
                f.write(b"\0")
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
        f.truncate(f.tell() - free_pages * 4096)


@pytest.mark.parametrize(("command", "stored", "free_pages"), [
    ("--set-mood", "json", 0), ("--remove", "json", 0), ("--set-mood", "json", 1),  # the vectors' write, the windows'
    ("--set-mood", "table", 0), ("--remove", "table", 2),  # a catalogue's vectors, and its table (SQLite)
])
def test_a_full_disk_changes_nothing_and_says_so(library_copy, small_disk, call_cli, command, stored, free_pages):
    if stored == "table":
        store_as_table(library_copy)
    library = small_disk / "library"
    shutil.copytree(library_copy, library)
    track = load_database(LibraryPaths.at(library)).tracks[2]
    _fill(small_disk, free_pages)
    before = _tree(library)

    done = call_cli(mtv.main, "--library", library, command, track["id"], *(["sleepy"] if command == "--set-mood"
                                                                            else []))
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"Error: the disk is full ({free_pages * 4096 / 1e6:.1f} MB free in "), lines
    assert lines[0].endswith("); nothing was changed"), lines
    assert _tree(library) == before
    db = load_database(LibraryPaths.at(library))
    assert db.table == (stored == "table") and track["sha256"] in db.column("sha256")
    assert not [p.name for p in library.iterdir() if p.name.startswith(".")]

    (small_disk / "filler").unlink()  # room again: the same change goes through
    done = call_cli(mtv.main, "--library", library, command, track["id"], *(["sleepy"] if command == "--set-mood"
                                                                            else []))
    assert done.returncode == 0, done.stderr
