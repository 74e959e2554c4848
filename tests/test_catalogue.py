"""A catalogue's track records in an SQLite table (tracks.py): the same library as inline JSON, asked the same
questions with the same answers (by the CLI too), kept a table by builds and edits under one commit point, read
lazily by a reader that keeps its version, and refused in one line when broken. (A kill at each crash point of a
catalogue's commit: tests/test_edit.py.)"""
from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest

import music_mood.database as database_module
import music_mood.library as library_module
import music_to_vector as mtv
import recommend
from music_mood.audio import file_sha256
from music_mood.build import build_library
from music_mood.database import EmptyLibraryError, UnknownTrackError, find_track
from music_mood.edit import remove_tracks, set_fields
from music_mood.library import LibraryPaths, load_database
from music_mood.live import LiveLibrary
from music_mood.rows import stack_rows, take_ranges, take_rows
from music_mood.search import Filters, rank_results, tag_values
from music_mood.tracks import TrackTable
from tests.conftest import put_in_new_music, store_as_table

AUTO_TAGS = {"key": "test", "mood": [["dreamy", 2.1], ["calm", 1.4]], "genre": [["jazz", 1.2]]}


def _with_auto_tags(tracks: list[dict]) -> None:
    """Automatic tags on two records and a record without a tempo key, so every kind of value is asked of both."""
    tracks[0]["auto_tags"] = AUTO_TAGS
    tracks[2]["auto_tags"] = {"key": "test", "mood": [["dark", 1.1]], "genre": []}
    del tracks[4]["bpm"]


@pytest.fixture
def both(library_copy, tmp_path):
    """(the library stored as inline JSON, the same library stored as a track table), the same records."""
    store_as_table(library_copy, table=False, change=_with_auto_tags)
    table = tmp_path / "catalogue"
    shutil.copytree(library_copy, table)
    store_as_table(table)
    return library_copy, table


def _records(db) -> list[dict]:
    return [dict(t) for t in db.tracks]


def test_a_table_holds_the_same_library_and_the_json_names_it(both):
    inline, table = both
    expected, paths = load_database(LibraryPaths.at(inline)), LibraryPaths.at(table)
    meta = json.loads(paths.metadata.read_text(encoding="utf-8"))
    assert "tracks" not in meta and meta["tracks_table"] == "music_database_metadata.sqlite"
    assert meta["track_count"] == len(expected) and meta["commit"]["tracks_bytes"] == paths.tracks_table.stat().st_size

    db = load_database(paths)
    assert isinstance(db.tracks, TrackTable) and db.table and not expected.table
    assert len(db) == len(expected) and _records(db) == expected.tracks
    assert db.tracks[-1] == expected.tracks[-1] and db.tracks[1:4] == expected.tracks[1:4]
    with pytest.raises(IndexError):
        db.tracks[len(expected)]
    np.testing.assert_array_equal(db.vectors, expected.vectors)
    np.testing.assert_array_equal(db.segments, expected.segments)
    db.tracks[0]["mood"] = "changed by the caller"  # a record read is the caller's copy, not the library's
    assert db.tracks[0]["mood"] == expected.tracks[0]["mood"]


def test_every_question_asked_of_all_records_has_the_same_answer(both):
    inline, table = both
    expected, db = load_database(LibraryPaths.at(inline)), load_database(LibraryPaths.at(table))
    for key in sorted({k for t in expected.tracks for k in t} | {"no such key"}):
        assert db.column(key, "absent") == expected.column(key, "absent"), key
    for key in ("mood", "genre"):
        values = tag_values(db, key)
        assert values == tag_values(expected, key)
        for wanted in [{v.lower()} for v in values] + [{v.lower() for v in values}, {"no such tag"}, set()]:
            np.testing.assert_array_equal(db.rows_tagged(key, wanted), expected.rows_tagged(key, wanted))
        for value in values:  # the brute-force answer: the track's own tag or one of its automatic ones
            rows = [row for row, t in enumerate(expected.tracks) if str(t.get(key, "")).lower() == value.lower()
                    or value.lower() in (w.lower() for w, _ in (t.get("auto_tags") or {}).get(key, []))]
            assert db.rows_tagged(key, {value.lower()}).tolist() == rows, value
    assert "dreamy" in tag_values(db, "mood") and "jazz" in tag_values(db, "genre")
    np.testing.assert_array_equal(db.bpm_values(), expected.bpm_values())
    for row, track in enumerate(expected.tracks):
        for key in ("id", "file_path", "sha256"):
            assert db.rows_with(key, track[key]) == expected.rows_with(key, track[key]) == [row]
        assert db.row_of_file(track["file_path"]) == row
        assert find_track(db, track["id"]) == find_track(db, str(table / track["file_path"])) == row
    assert db.row_of_file("processed_music/none.mp3") is None and db.rows_with("id", "none") == []
    with pytest.raises(UnknownTrackError, match="'nothing' is no track"):
        find_track(db, "nothing")
    with pytest.raises(ValueError, match="looks rows up by"):
        db.rows_with("mood", "calm")

    rng = np.random.default_rng(0)
    for query in rng.standard_normal((4, db.dim)).astype(np.float32):
        query /= np.linalg.norm(query)
        for filters in (Filters(), Filters(moods=["dreamy"]), Filters(genres=["jazz", "acoustic"]),
                        Filters(bpm="100-140")):
            assert rank_results(db, query, 5, filters) == rank_results(expected, query, 5, filters), filters
    for bad in ({"moods": ["no such mood"]}, {"bpm": "300-"}):
        with pytest.raises(EmptyLibraryError) as on_table:
            Filters(**bad).check(db)
        with pytest.raises(EmptyLibraryError) as on_json:
            Filters(**bad).check(expected)
        assert str(on_table.value) == str(on_json.value)
    assert "1 tracks added before tempos were stored" in str(on_table.value)  # the record without a bpm key


def test_the_cli_answers_the_same_from_a_table(both, call_cli):
    inline, table = both
    track = load_database(LibraryPaths.at(inline)).tracks[3]
    for args in (["--list"], ["--remove", "no-such-track"]):
        on_json, on_table = (call_cli(mtv.main, "--library", folder, *args) for folder in (inline, table))
        assert on_table.returncode == on_json.returncode and on_table.stdout == on_json.stdout
        assert on_table.stderr.replace(str(table), str(inline)) == on_json.stderr
    listed = call_cli(mtv.main, "--library", table, "--list")
    assert len(listed.stdout.splitlines()) == 1 + len(load_database(LibraryPaths.at(table)))
    for args in (["--like", track["id"]], ["--like", track["file_path"], "--mood", "dreamy", "--topk", "3"],
                 ["--like", track["id"], "--bpm", "90-150", "--max-per-artist", "0", "--diversity", "0.5"],
                 ["--like", track["id"], "--mood", "no such mood"]):
        on_json, on_table = (call_cli(recommend.main, "--library", folder, "--json", *args) for folder in both)
        assert on_table.returncode == on_json.returncode, on_table.stderr
        assert on_table.stdout.replace(str(table), str(inline)) == on_json.stdout
        assert on_table.stderr.replace(str(table), str(inline)) == on_json.stderr


def test_builds_and_edits_keep_a_catalogue_a_table_and_match_the_json_library(both, clap_audio, sample_tracks):
    inline, table = both
    paths = {folder: LibraryPaths.at(folder) for folder in both}
    listed = {t["sha256"] for t in load_database(paths[inline]).tracks}
    new = [t for t in sample_tracks if file_sha256(t) not in listed][:2]
    for folder in both:
        put_in_new_music(folder, new)
        report = build_library(clap_audio, paths[folder], progress=False)
        assert len(report.added) == 2 and not report.failed
    first = load_database(paths[inline]).tracks[0]
    for folder in both:
        set_fields(paths[folder], [(first["id"], "mood", "sleepy")])
        remove_tracks(paths[folder], [load_database(paths[folder]).tracks[1]["id"]])
    expected, db = load_database(paths[inline]), load_database(paths[table])
    assert db.table and not expected.table and isinstance(db.tracks, TrackTable)
    assert [{k: v for k, v in t.items() if k != "embedded_by"} for t in db.tracks] == \
        [{k: v for k, v in t.items() if k != "embedded_by"} for t in expected.tracks]
    assert db.tracks[0]["mood"] == "sleepy" and len(db) == len(listed) + 2 - 1
    np.testing.assert_allclose(db.vectors, expected.vectors, atol=1e-6)
    np.testing.assert_allclose(db.segments, expected.segments, atol=1e-6)
    # One table file, the committed one: the superseded tables and the staged ones are gone.
    assert sorted(p.name for p in table.glob("*music_database_metadata*")) == \
        ["music_database_metadata.json", "music_database_metadata.sqlite"]


def test_a_library_becomes_a_table_at_the_threshold_and_a_rebuild_below_it_is_json_again(library_copy, clap_audio,
                                                                                         monkeypatch):
    paths = LibraryPaths.at(library_copy)
    size = len(load_database(paths))
    monkeypatch.setattr(library_module, "TABLE_MIN_TRACKS", size + 1)
    store_as_table(library_copy, table=False)
    assert not load_database(paths).table and not paths.tracks_table.exists()

    monkeypatch.setattr(library_module, "TABLE_MIN_TRACKS", size)
    store_as_table(library_copy, table=False)  # a library of the threshold's size is stored as a table anyway
    assert load_database(paths).table and paths.tracks_table.exists()
    records = load_database(paths).tracks[:]

    monkeypatch.setattr(library_module, "TABLE_MIN_TRACKS", size + 1)
    build_library(clap_audio, paths, progress=False)  # nothing to add: a catalogue stays a table below it
    assert load_database(paths).table
    report = build_library(clap_audio, paths, rebuild=True, progress=False)  # a rebuild chooses afresh, by size
    assert report.tracks == size
    db = load_database(paths)
    assert not db.table and isinstance(db.tracks, list) and not paths.tracks_table.exists()
    assert [t["sha256"] for t in db.tracks] == [t["sha256"] for t in records]


def test_a_reader_keeps_its_version_while_a_commit_replaces_the_table(both):
    _, table = both
    paths = LibraryPaths.at(table)
    live = LiveLibrary(paths, clap_model=load_database(paths).clap_model)
    old = live.current()
    track = old.tracks[2]
    assert live.track_file(live.served_track(track["id"])) == table / track["file_path"]
    assert live.served_track("0123456789abcdef") is None

    set_fields(paths, [(track["id"], "mood", "sleepy")])
    remove_tracks(paths, [track["id"]])
    assert old.tracks[2] == track and old.column("mood")[2] == track["mood"]  # the file it opened, as it was
    new = live.current()
    assert new is not old and new.row_of_file(track["file_path"]) is None
    assert live.served_track(track["id"]) is None


@pytest.mark.parametrize("damage", ["missing", "truncated", "garbage", "other table"])
def test_a_broken_table_is_one_line_and_changes_nothing(both, call_cli, clap_audio, damage, tmp_path):
    inline, table = both
    paths = LibraryPaths.at(table)
    if damage == "missing":
        paths.tracks_table.unlink()
    elif damage == "truncated":
        paths.tracks_table.write_bytes(paths.tracks_table.read_bytes()[:4096])
    elif damage == "garbage":  # of the size the commit recorded
        size = paths.tracks_table.stat().st_size
        paths.tracks_table.write_bytes((b"not sqlite " * (size // 11 + 1))[:size])
    else:  # another commit's table, of the same size: a different row count
        other = tmp_path / "other"
        shutil.copytree(table, other)
        store_as_table(other, change=lambda tracks: tracks.pop())
        shutil.copyfile(LibraryPaths.at(other).tracks_table, paths.tracks_table)
    files = {p: p.read_bytes() for p in table.rglob("*") if p.is_file() and not p.name.endswith(".lock")}
    track = load_database(LibraryPaths.at(inline)).tracks[0]

    for main, args in ((recommend.main, ["--like", track["id"]]), (mtv.main, ["--list"]),
                       (mtv.main, ["--set-mood", track["id"], "calm"])):
        done = call_cli(main, "--library", table, *args)
        assert done.returncode == 1 and done.stdout == "", done.stderr
        assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("Error: ")
        assert "music_database_metadata.sqlite" in done.stderr and "--rebuild" in done.stderr
    assert {p: p.read_bytes() for p in table.rglob("*") if p.is_file() and not p.name.endswith(".lock")} == files

    report = build_library(clap_audio, paths, rebuild=True, progress=False)  # what the message says to do
    assert report.tracks == len(load_database(LibraryPaths.at(inline))) and not report.failed


def test_a_row_stack_is_the_matrix_it_stands_for(tmp_path):
    rng = np.random.default_rng(1)
    on_disk, new = rng.standard_normal((50, 8)).astype(np.float32), rng.standard_normal((7, 8)).astype(np.float32)
    np.save(tmp_path / "rows.npy", on_disk)
    mapped = np.load(tmp_path / "rows.npy", mmap_mode="r")
    keep = [0, 1, 2, 5, 6, 9, 30]
    stack = stack_rows([take_rows(mapped, keep), new], 8)
    expected = np.vstack([on_disk[keep], new])
    assert stack.shape == expected.shape and len(take_rows(mapped, range(50)).blocks) == 1
    np.testing.assert_array_equal(np.asarray(stack), expected)
    for rows in (3, -1, slice(2, 9), [8, 0, 4, 13], []):
        np.testing.assert_array_equal(stack[rows], expected[rows])
    np.testing.assert_array_equal(np.asarray(take_ranges(stack, [(1, 4), (4, 6), (10, 12)])),
                                  expected[[1, 2, 3, 4, 5, 10, 11]])
    written, saved = io.BytesIO(), io.BytesIO()
    stack.write_npy(written)
    np.save(saved, expected)
    assert written.getvalue() == saved.getvalue()


def test_a_memory_mapped_library_commits_by_streaming_and_writes_the_same_files(library_copy, tmp_path, clap_audio,
                                                                                sample_tracks, monkeypatch):
    """The same build, correction and removal on two copies: one loaded as a catalogue is (memory-mapped, its next
    state stacked lazily), one as a small library; the files they commit are the same, byte for byte."""
    mapped = tmp_path / "mapped"
    shutil.copytree(library_copy, mapped)
    listed = {t["sha256"] for t in load_database(LibraryPaths.at(library_copy)).tracks}
    new = [t for t in sample_tracks if file_sha256(t) not in listed][:2]
    lazy_stacks = []
    monkeypatch.setattr(database_module, "stack_rows", lambda *a: lazy_stacks.append(1) or stack_rows(*a))
    for folder, threshold in ((library_copy, library_module.SEARCH_INDEX_MIN_TRACKS), (mapped, 1)):
        paths = LibraryPaths.at(folder)
        with monkeypatch.context() as scope:
            scope.setattr(library_module, "SEARCH_INDEX_MIN_TRACKS", threshold)
            assert isinstance(load_database(paths).segments, np.memmap) == (threshold == 1)
            put_in_new_music(folder, new)
            assert len(build_library(clap_audio, paths, progress=False).added) == 2
            first = load_database(paths).tracks[0]["id"]
            set_fields(paths, [(first, "genre", "jazz")])
            remove_tracks(paths, [load_database(paths).tracks[2]["id"]])
        if threshold != 1:
            assert not lazy_stacks
    assert len(lazy_stacks) == 4  # vectors and windows of the build's commit and of the removal's
    for name in ("music_database.npy", "music_database_segments.npy"):
        assert (mapped / name).read_bytes() == (library_copy / name).read_bytes(), name
    assert load_database(LibraryPaths.at(mapped)).tracks == load_database(LibraryPaths.at(library_copy)).tracks


def test_the_library_tab_shows_the_first_rows_of_a_catalogue_and_says_so(both, monkeypatch):
    from music_mood.web import views

    db = load_database(LibraryPaths.at(both[1]))
    assert [row[-1] for row in views.library_rows(db)] == [t["file_path"] for t in db.tracks]
    assert "first" not in views.library_table_note(len(db))
    monkeypatch.setattr(views, "LIBRARY_TABLE_MAX_ROWS", 4)
    rows = views.library_rows(db)
    assert [row[0] for row in rows] == [1, 2, 3, 4] and [row[-1] for row in rows] == \
        [t["file_path"] for t in db.tracks[:4]]
    assert f"The table shows the first 4 of the {len(db)} tracks" in views.library_table_note(len(db))


def test_list_streams_and_a_reader_that_stops_early_ends_it_quietly(both):
    """--list prints a catalogue line by line; `| head` closing the pipe is no error (exit 0, nothing on stderr)."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    listing = subprocess.Popen([sys.executable, str(ROOT / "music_to_vector.py"), "--library", str(both[1]), "--list"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    listing.stdout.close()  # the reader is gone before the first line is written
    stderr = listing.stderr.read()
    assert listing.wait(timeout=120) == 0 and stderr == b""
