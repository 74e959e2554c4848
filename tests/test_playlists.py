"""music_mood.playlists: M3U8 files of real tracks, read back with a real parser (the `m3u8` package), and the
check of a playlist's name."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import m3u8
import pytest

from music_mood.playlists import (
    NAME_MAX_CHARS,
    PlaylistEntry,
    PlaylistNameError,
    check_playlist_name,
    playlist_path,
    write_m3u8,
)


@pytest.fixture
def tracks(tmp_path, isolated_library, sample_tracks):
    """Three real tracks in the library (UTF-8 names, one in a mood folder) and one in a folder outside it."""
    placed = {
        "calm": isolated_library / "processed_music" / "calm" / "Café — été ♪.opus",
        "plain": isolated_library / "processed_music" / "plain.opus",
        "spaces": isolated_library / "processed_music" / "with spaces, commas & #hash.opus",
        "outside": tmp_path / "Music" / "Zoë" / "Über Nacht.opus",
    }
    for source, target in zip(sample_tracks, placed.values()):
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    return placed


def read_back(playlist: Path) -> list[tuple[Path, float, str]]:
    """Each entry as the m3u8 parser reads it: the file it resolves to (relative to the playlist's folder, as VLC
    resolves it), its duration and its title."""
    parsed = m3u8.load(str(playlist))
    return [(Path(playlist.parent, segment.uri), segment.duration, segment.title) for segment in parsed.segments]


def test_m3u8_lists_library_tracks_relative_and_others_absolute(isolated_library, tracks):
    playlist = playlist_path(isolated_library, "Soirée d'été ♪")
    entries = [
        PlaylistEntry(tracks["calm"], 31.6, "Zoë Ørsted", "Café — l'été"),
        PlaylistEntry(tracks["outside"], 29.2, "Zoë", "Über Nacht"),
        PlaylistEntry(tracks["spaces"], 30.0, None, "Spaces, commas"),
        PlaylistEntry(tracks["plain"], None, None, None),
    ]
    assert write_m3u8(playlist, entries) == playlist == isolated_library / "playlists" / "Soirée d'été ♪.m3u8"

    raw = playlist.read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf")  # no byte-order mark: "#EXTM3U" must be the first bytes
    text = raw.decode("utf-8")
    assert text.splitlines() == [
        "#EXTM3U",
        "#EXTINF:32,Zoë Ørsted - Café — l'été",
        "../processed_music/calm/Café — été ♪.opus",
        "#EXTINF:29,Zoë - Über Nacht",
        str(tracks["outside"]),
        "#EXTINF:30,Spaces, commas",
        "../processed_music/with spaces, commas & #hash.opus",
        "#EXTINF:-1,plain",
        "../processed_music/plain.opus",
    ]
    assert "file://" not in text and text.endswith("\n")
    assert Path(text.splitlines()[4]).is_absolute()

    entries_read = read_back(playlist)
    assert [(d, t) for _, d, t in entries_read] == [(32, "Zoë Ørsted - Café — l'été"), (29, "Zoë - Über Nacht"),
                                                    (30, "Spaces, commas"), (-1, "plain")]
    for (resolved, _, _), entry in zip(entries_read, entries):
        assert resolved.is_file() and resolved.samefile(entry.path)


def test_relative_entries_still_resolve_after_the_library_moves(isolated_library, tracks, tmp_path):
    write_m3u8(playlist_path(isolated_library, "mix"),
               [PlaylistEntry(tracks["calm"], 30, "A", "B"), PlaylistEntry(tracks["plain"], 30, "A", "C")])
    moved = tmp_path / "moved-library"
    shutil.move(isolated_library, moved)
    for resolved, _, _ in read_back(moved / "playlists" / "mix.m3u8"):
        assert resolved.is_file() and resolved.is_relative_to(moved)


def test_a_file_whose_name_starts_with_hash_is_not_read_as_a_comment(isolated_library, tracks):
    beside = isolated_library / "playlists" / "#1 hit.opus"
    beside.parent.mkdir()
    shutil.copyfile(tracks["plain"], beside)
    playlist = write_m3u8(playlist_path(isolated_library, "hits"), [PlaylistEntry(beside, 30, "X", "Y")])
    assert "./#1 hit.opus" in playlist.read_text(encoding="utf-8").splitlines()
    [(resolved, _, _)] = read_back(playlist)
    assert resolved.samefile(beside)


def test_a_title_on_several_lines_becomes_one_extinf_line(isolated_library, tracks):
    playlist = write_m3u8(playlist_path(isolated_library, "x"),
                          [PlaylistEntry(tracks["plain"], 12.4, "Two\nLines", "Tab\there\r\n")])
    assert playlist.read_text(encoding="utf-8").splitlines()[1] == "#EXTINF:12,Two Lines - Tab here"


def test_a_track_outside_the_root_gets_its_absolute_path_and_links_are_kept(isolated_library, tracks, tmp_path):
    link = isolated_library / "processed_music" / "link.opus"
    link.symlink_to(tracks["outside"])
    playlist = write_m3u8(playlist_path(isolated_library, "links"), [PlaylistEntry(link, 30, "A", "B")])
    assert playlist.read_text(encoding="utf-8").splitlines()[2] == "../processed_music/link.opus"
    elsewhere = write_m3u8(tmp_path / "Music" / "elsewhere.m3u8", [PlaylistEntry(tracks["calm"], 30, "A", "B")],
                           root=tmp_path / "Music")
    assert elsewhere.read_text(encoding="utf-8").splitlines()[2] == str(tracks["calm"])


def test_rewriting_a_playlist_replaces_it_whole_and_leaves_no_temp_file(isolated_library, tracks):
    playlist = playlist_path(isolated_library, "again")
    write_m3u8(playlist, [PlaylistEntry(tracks["calm"], 30, "A", "First")])
    write_m3u8(playlist, [PlaylistEntry(tracks["plain"], 30, "A", "Second")])
    assert [t for _, _, t in read_back(playlist)] == ["A - Second"]
    assert os.listdir(playlist.parent) == [playlist.name]


@pytest.mark.parametrize("name", ["Soirée d'été ♪", "Trip: Paris 2024", "日本の夏", "  padded  ", "a" * NAME_MAX_CHARS])
def test_a_playlist_name_of_one_printable_line_is_accepted(name):
    assert check_playlist_name(name) == name.strip()


@pytest.mark.parametrize("name, says", [
    ("", "needs a name"), ("   ", "needs a name"), ("a/b", "cannot hold"), ("..\\evil", "cannot hold"),
    ("../../etc/passwd", "cannot hold"), (".hidden", "start with a dot"), ("..", "start with a dot"),
    ("two\nlines", "one line"), ("tab\there", "one line"), ("nul\x00", "one line"), ("line\u2028sep", "one line"),
    ("a" * (NAME_MAX_CHARS + 1), "at most"), ("♪" * 70, "210 bytes"), (None, "is text"),
])
def test_a_playlist_name_that_is_not_one_short_line_or_is_a_path_is_refused(name, says):
    with pytest.raises(PlaylistNameError, match=says):
        check_playlist_name(name)
