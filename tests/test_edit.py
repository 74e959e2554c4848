"""Removing and correcting tracks (music_to_vector.py --remove / --set-FIELD): one commit each, the rest of the
library untouched, a correction kept by --rebuild, bad input changing nothing, and a kill at any write leaving the
old library or the new one."""
from __future__ import annotations

import collections
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest

import music_to_vector as mtv
from music_mood.audio import file_sha256, find_audio_files
from music_mood.build import build_library
from music_mood.database import UnknownTrackError
from music_mood.edit import set_fields
from music_mood.library import LibraryPaths, load_database
from music_mood.storage import CRASH_AT_ENV, CRASH_LOG_ENV
from tests import forked
from tests.conftest import store_as_table


def _tree(root: Path) -> dict[str, bytes]:
    """Every file of the library, byte for byte (the lock file is no content: any run leaves it)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.endswith(".lock")}


def _rows(db) -> dict[str, tuple[np.ndarray, np.ndarray, dict]]:
    """Per track (by content hash): its vector, its windows and its record without the segment offset."""
    out = {}
    for i, t in enumerate(db.tracks):
        start, count = t["segment_offset"], t["segment_count"]
        record = {k: v for k, v in t.items() if k != "segment_offset"}
        out[t["sha256"]] = (np.asarray(db.vectors[i]), np.asarray(db.segments[start:start + count]), record)
    return out


def _assert_aligned(db) -> None:
    """Windows numbered in order with no gap or overlap, as load_database's contract wants."""
    offset = 0
    for t in db.tracks:
        assert t["segment_offset"] == offset
        offset += t["segment_count"]
    assert offset == len(db.segments) and len(db.vectors) == len(db.tracks)


def test_remove_takes_rows_windows_and_file_together(library_copy, call_cli, clap_audio):
    paths = LibraryPaths.at(library_copy)
    before = load_database(paths)
    by_path, by_id = before.tracks[1], before.tracks[4]
    # A track removed earlier under the same name stays: the new one is put beside it.
    earlier = library_copy / "removed" / Path(by_id["file_path"]).relative_to("processed_music")
    earlier.parent.mkdir(parents=True)
    earlier.write_bytes(b"an older removed file")

    done = call_cli(mtv.main, "--library", library_copy, "--remove", library_copy / by_path["file_path"],
                    by_id["id"])
    assert done.returncode == 0, done.stderr

    after = load_database(paths)
    _assert_aligned(after)
    kept = {sha: row for sha, row in _rows(before).items() if sha not in (by_path["sha256"], by_id["sha256"])}
    got = _rows(after)
    assert list(got) == list(kept)  # the others, in their order
    for sha, (vector, windows, record) in kept.items():
        np.testing.assert_array_equal(got[sha][0], vector)
        np.testing.assert_array_equal(got[sha][1], windows)
        assert got[sha][2] == record

    second = earlier.with_name(f"{earlier.stem} (2){earlier.suffix}")
    moved_to = {by_path["file_path"]: "removed/" + Path(by_path["file_path"]).relative_to("processed_music").as_posix(),
                by_id["file_path"]: second.relative_to(library_copy).as_posix()}
    for source, target in moved_to.items():
        assert not (library_copy / source).exists()
        assert file_sha256(library_copy / target) in (by_path["sha256"], by_id["sha256"])
    assert earlier.read_bytes() == b"an older removed file"
    assert done.stdout.splitlines() == [f"removed  {s}  -> {t}" for s, t in moved_to.items()]
    assert done.stderr.strip().splitlines()[-1] == f"2 removed, {len(kept)} tracks in the library."
    assert not [p.name for p in library_copy.iterdir() if p.name.startswith(".")]

    # The next build neither adds the removed files back nor drops anything else.
    report = build_library(clap_audio, paths, progress=False)
    assert not report.added and not report.dropped and not report.failed
    assert load_database(paths).tracks == after.tracks


@pytest.mark.parametrize("args", [["--remove", "processed_music/nope.mp3"],
                                  ["--remove", "TRACK0", "no-such-id"],
                                  ["--set-mood", "no-such-id", "calm"],
                                  ["--set-mood", "TRACK0", "calm", "--set-genre", "nope", "jazz"]])
def test_an_unknown_track_is_one_line_exit_1_and_changes_nothing(library_copy, call_cli, args):
    paths = LibraryPaths.at(library_copy)
    known = load_database(paths).tracks[0]["id"]
    before = _tree(library_copy)
    done = call_cli(mtv.main, "--library", library_copy, *[known if a == "TRACK0" else a for a in args])
    assert done.returncode == 1
    assert done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1
    assert done.stderr.startswith("Error: ") and "is no track of the library in " in done.stderr
    assert "nothing was changed" in done.stderr
    assert _tree(library_copy) == before


def test_the_id_that_list_shows_removes_that_track(library_copy, call_cli):
    paths = LibraryPaths.at(library_copy)
    line = call_cli(mtv.main, "--library", library_copy, "--list").stdout.splitlines()[3]
    track_id, file_path = line.split()[-2:]
    done = call_cli(mtv.main, "--library", library_copy, "--remove", track_id)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"removed  {file_path}  -> removed/")
    assert file_path not in {t["file_path"] for t in load_database(paths).tracks}


def test_an_unknown_field_is_a_usage_error(library_copy, call_cli):
    paths = LibraryPaths.at(library_copy)
    known = load_database(paths).tracks[0]["id"]
    before = _tree(library_copy)
    done = call_cli(mtv.main, "--library", library_copy, "--set-year", known, "1999")
    assert done.returncode == 2 and "unrecognized arguments: --set-year" in done.stderr
    done = call_cli(mtv.main, "--library", library_copy, "--set-mood", known, "calm", "--remove", known)
    assert done.returncode == 2 and "not with --rebuild, --list, --sample or --remove" in done.stderr
    with pytest.raises(ValueError, match="cannot set 'year'"):
        set_fields(paths, [(known, "year", "1999")])
    with pytest.raises(UnknownTrackError):
        set_fields(paths, [("nope", "mood", "calm")])
    assert _tree(library_copy) == before


ONE_LINE = "must be one line of printable text (no line breaks, tabs or control characters); nothing was changed."


@pytest.mark.parametrize("args, message", [
    (["--set-mood", "ID", "x" * 65], "Error: the mood is 65 characters long; at most 64; nothing was changed."),
    (["--set-title", "ID", "t" * 501], "Error: the title is 501 characters long; at most 500; nothing was changed."),
    (["--set-title", "ID", "Night Drive", "--set-artist", "ID", "Two\nLines"], f"Error: the artist {ONE_LINE}"),
    (["--set-genre", "ID", "jazz\trock"], f"Error: the genre {ONE_LINE}"),
])
def test_a_field_is_one_line_of_bounded_text(library_copy, call_cli, args, message):
    """What --list shows one line per track takes no line break, and a tag is a word or two: anything else is one
    error line, exit 1, and the library is byte for byte as it was; the longest values allowed are taken."""
    paths = LibraryPaths.at(library_copy)
    track = load_database(paths).tracks[0]
    before = _tree(library_copy)
    done = call_cli(mtv.main, "--library", library_copy, *[track["id"] if a == "ID" else a for a in args])
    assert (done.returncode, done.stdout, done.stderr) == (1, "", message + "\n")
    assert _tree(library_copy) == before
    done = call_cli(mtv.main, "--library", library_copy, "--set-mood", track["id"], "m" * 64, "--set-title",
                    track["id"], "t" * 500)
    assert done.returncode == 0, done.stderr
    assert (load_database(paths).tracks[0]["mood"], load_database(paths).tracks[0]["title"]) == ("m" * 64, "t" * 500)


def test_a_correction_changes_only_that_record_and_survives_rebuild(library_copy, call_cli, clap_audio):
    paths = LibraryPaths.at(library_copy)
    before = load_database(paths)
    target, other = before.tracks[2], before.tracks[3]
    assert target["mood"] != "sleepy" and target["from_file"]["mood"] == target["mood"]

    done = call_cli(mtv.main, "--library", library_copy, "--set-mood", target["file_path"], "sleepy",
                    "--set-title", target["id"], "  Night Drive ", "--set-genre", other["id"], "jazz")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"set  {target['file_path']}  title: {target['title']!r} -> 'Night Drive'",
        f"set  {other['file_path']}  genre: {other['genre']!r} -> 'jazz'",
        f"set  {target['file_path']}  mood: {target['mood']!r} -> 'sleepy'",
    ]
    after = load_database(paths)
    _assert_aligned(after)
    np.testing.assert_array_equal(after.vectors, before.vectors)
    np.testing.assert_array_equal(after.segments, before.segments)
    expected = [dict(t) for t in before.tracks]
    expected[2].update(mood="sleepy", title="Night Drive")
    expected[3].update(genre="jazz")
    assert after.tracks == expected

    report = build_library(clap_audio, paths, rebuild=True, progress=False)
    assert not report.failed and report.tracks == len(before)
    rebuilt = {t["sha256"]: t for t in load_database(paths).tracks}
    assert (rebuilt[target["sha256"]]["mood"], rebuilt[target["sha256"]]["title"]) == ("sleepy", "Night Drive")
    assert rebuilt[other["sha256"]]["genre"] == "jazz"
    for t in before.tracks[:2] + before.tracks[4:]:  # the others still follow their files
        assert {k: rebuilt[t["sha256"]][k] for k in ("mood", "genre", "title")} == \
            {k: t[k] for k in ("mood", "genre", "title")}


def _state(root: Path, removing: dict) -> str:
    """After a kill (and the load that finishes a half-done commit): "old" or "new", asserting nothing is mixed or
    lost: the removed track is listed with its file in processed_music/, or unlisted with its file in removed/."""
    db = load_database(LibraryPaths.at(root))
    _assert_aligned(db)
    listed = collections.Counter(t["sha256"] for t in db.tracks)
    assert max(listed.values()) == 1
    on_disk = {p.relative_to(root).as_posix() for p in find_audio_files(root / "processed_music")}
    assert on_disk == {t["file_path"] for t in db.tracks}
    in_removed = [file_sha256(p) for p in find_audio_files(root / "removed")] if (root / "removed").exists() else []
    if removing["sha256"] in listed:
        assert in_removed == []
        return "old"
    assert in_removed == [removing["sha256"]]
    return "new"


def _kill_at(number: str, what: str, base: Path, library: Path, args: list) -> None:
    """Put the library back as `base` holds it, then run music_to_vector.py with `args` (a forked child,
    tests/forked.py) and have it killed at crash point `number` (`what` names it for the message)."""
    shutil.rmtree(library)
    shutil.copytree(base, library)
    killed = forked.run("music_to_vector", *args, folder=base.parent, env_extra={CRASH_AT_ENV: number})
    assert killed.returncode == -signal.SIGKILL, f"not killed at point {number} ({what}): {killed.stderr}"


@pytest.mark.parametrize(("command", "stored"), [("--remove", "json"), ("--set-mood", "json"), ("--remove", "table")])
def test_a_kill_at_each_crash_point_leaves_the_old_or_the_new_library(library_copy, tmp_path, command, stored):
    """A removal or a correction, killed at each crash point in turn. A catalogue's (stored as a track table) commit
    writes one more data file, the table, under the same commit point."""
    paths = LibraryPaths.at(library_copy)
    if stored == "table":
        store_as_table(library_copy)
    base = tmp_path / "base"
    shutil.copytree(library_copy, base)
    before = _rows(load_database(paths))
    track = load_database(paths).tracks[3]
    args = ["--library", library_copy, command, track["id"], *(["sleepy"] if command == "--set-mood" else [])]

    log = tmp_path / "points.txt"
    done = forked.run("music_to_vector", *args, folder=tmp_path, env_extra={CRASH_LOG_ENV: str(log)})
    assert done.returncode == 0, done.stderr
    points = [line.split("\t", 1) for line in log.read_text().splitlines()]
    kinds = collections.Counter(what.split()[0] for _, what in points)
    assert kinds["write"] == 3 + (stored == "table") and kinds["rename"] >= 3 + (stored == "table"), kinds
    assert kinds["move"] == (command == "--remove"), kinds
    new = _rows(load_database(paths))

    seen = collections.Counter()
    for number, what in points:
        _kill_at(number, what, base, library_copy, args)
        rows = _rows(load_database(paths))
        if command == "--remove":
            state = _state(library_copy, track)
        else:
            state = "new" if rows[track["sha256"]][2]["mood"] == "sleepy" else "old"
        reference = before if state == "old" else new
        assert list(rows) == list(reference), f"after a kill at {what}"
        for sha, (vector, windows, record) in rows.items():
            np.testing.assert_array_equal(vector, reference[sha][0])
            np.testing.assert_array_equal(windows, reference[sha][1])
            assert record == reference[sha][2], f"after a kill at {what}"
        seen[state] += 1
        # The next run finishes the job (or does it again) and leaves no staged or temp file behind.
        again = forked.run("music_to_vector", *args, folder=tmp_path)
        assert again.returncode == (0 if state == "old" else 1 if command == "--remove" else 0), again.stderr
        assert list(_rows(load_database(paths))) == list(new)
        assert not [p.name for p in library_copy.iterdir() if p.name.startswith(".")]
        assert load_database(paths).table == (stored == "table")
    assert seen["old"] and seen["new"], seen
    print(f"{command} ({stored}): killed at each of {len(points)} crash points ({dict(kinds)}); left {dict(seen)}")


def _same(rows: dict, reference: dict) -> bool:
    """Whether two _rows() states are the same library: tracks in the same order, vectors, windows and records."""
    return list(rows) == list(reference) and all(
        np.array_equal(vector, reference[sha][0]) and np.array_equal(windows, reference[sha][1])
        and record == reference[sha][2] for sha, (vector, windows, record) in rows.items())


@pytest.mark.parametrize("change", ["prune", "rename", "retag"])
def test_a_kill_while_a_build_prunes_follows_or_retags_leaves_the_old_or_the_new_library(library_copy, checkpoints,
                                                                                          tmp_path, change):
    """The builder's changes that embed nothing: dropping a track whose file was deleted (prune), following a file
    renamed by hand into another mood folder (rename), and giving the tracks their automatic tags (retag; the
    built library has none, so prune and rename commit tags too). Each is one commit: a kill at any of its
    crash points leaves the old library or the new one, and the next run finishes it."""
    paths = LibraryPaths.at(library_copy)
    track = load_database(paths).tracks[3]
    listed = library_copy / track["file_path"]
    if change == "prune":
        listed.unlink()
    elif change == "rename":
        other = next(p for p in (library_copy / "processed_music").iterdir() if p.name != listed.parent.name)
        listed.rename(other / f"renamed {listed.name}")
    base = tmp_path / "base"
    shutil.copytree(library_copy, base)
    before = _rows(load_database(paths))
    args = ["--library", library_copy, "--clap-model", checkpoints["clap"]]

    log = tmp_path / "points.txt"
    done = forked.run("music_to_vector", *args, folder=tmp_path, env_extra={CRASH_LOG_ENV: str(log)})
    assert done.returncode == 0, done.stderr
    points = [line.split("\t", 1) for line in log.read_text().splitlines()]
    kinds = collections.Counter(what.split()[0] for _, what in points)
    assert kinds["write"] == 3 and kinds["rename"] >= 3 and not kinds["move"], kinds
    new = _rows(load_database(paths))
    assert all(record.get("auto_tags") for _, _, record in new.values())
    if change == "prune":
        assert list(new) == [sha for sha in before if sha != track["sha256"]]
    elif change == "rename":
        record = new[track["sha256"]][2]
        assert record["file_path"] == f"processed_music/{other.name}/renamed {listed.name}"
        assert record["mood"] == other.name
    for sha, (vector, windows, _) in new.items():  # nothing is embedded again: vectors and windows as they were
        np.testing.assert_array_equal(vector, before[sha][0])
        np.testing.assert_array_equal(windows, before[sha][1])

    seen = collections.Counter()
    for number, what in points:
        _kill_at(number, what, base, library_copy, args)
        db = load_database(paths)
        _assert_aligned(db)
        rows = _rows(db)
        state = "old" if _same(rows, before) else "new"
        assert _same(rows, before if state == "old" else new), f"a mixed library after a kill at {what}"
        seen[state] += 1
        again = forked.run("music_to_vector", *args, folder=tmp_path)
        assert again.returncode == 0, again.stderr
        assert _same(_rows(load_database(paths)), new), f"not finished after a kill at {what}"
        assert not [p.name for p in library_copy.iterdir() if p.name.startswith(".")]
    assert seen["old"] and seen["new"], seen
    print(f"{change}: killed at each of {len(points)} crash points ({dict(kinds)}); left {dict(seen)}")
