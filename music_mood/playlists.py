"""Playlists as files that music players import: an M3U8 of local tracks, and the check of a playlist's name.

The M3U8 is what VLC, Navidrome and Jellyfin read (https://wiki.videolan.org/M3U/): UTF-8, `#EXTM3U`, then for
each track `#EXTINF:<seconds>,<artist> - <title>` and its path on the next line. A track's path is relative to
the playlist file when the track lies under `root` (the library folder by default), so the library can be moved or
mounted elsewhere with its playlists; other tracks get absolute paths. Never `file://` URLs: Navidrome's import
matches plain paths (navidrome#3749, #4241).
"""
from __future__ import annotations

import os
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from music_mood.storage import write_atomically

PLAYLISTS_FOLDER = "playlists"  # in the library folder
PLAYLIST_SUFFIX = ".m3u8"
NAME_MAX_CHARS = 100
# File systems cap a name at 255 bytes; the suffix and an editor's temp prefix need some of them.
NAME_MAX_BYTES = 200
# Not in a name: control characters (newline, tab, NUL...), line and paragraph separators, lone surrogates, and
# unassigned code points; they would break an #EXTINF line, a file name or a server's list.
_NOT_TEXT = {"Cc", "Cs", "Zl", "Zp", "Cn"}
_SEPARATORS = ("/", "\\")


class PlaylistNameError(ValueError):
    """A name a playlist cannot have: empty, more than one line, too long, or a path."""


@dataclass(frozen=True)
class PlaylistEntry:
    """One track of a playlist file: where its audio is, and what #EXTINF says of it."""

    path: Path
    duration_s: float | None = None
    artist: str | None = None
    title: str | None = None


def check_playlist_name(name: object) -> str:
    """`name` stripped, when it can name a playlist both as a file (NAME.m3u8) and on a server: one line of
    printable text, 1 to NAME_MAX_CHARS characters (and NAME_MAX_BYTES in UTF-8), with no path separator, not
    starting with a dot (a hidden file, or . and ..). PlaylistNameError says what is wrong."""
    if not isinstance(name, str):
        raise PlaylistNameError(f"a playlist name is text, not {type(name).__name__}")
    text = name.strip()
    if not text:
        raise PlaylistNameError("a playlist needs a name")
    if any(unicodedata.category(c) in _NOT_TEXT for c in text):
        raise PlaylistNameError("a playlist name is one line of printable text (no line breaks, tabs or control "
                                "characters)")
    if any(sep in text for sep in _SEPARATORS):
        raise PlaylistNameError(f"a playlist name cannot hold / or \\: {text!r}")
    if text.startswith("."):
        raise PlaylistNameError(f"a playlist name cannot start with a dot: {text!r}")
    if len(text) > NAME_MAX_CHARS or len(text.encode("utf-8")) > NAME_MAX_BYTES:
        raise PlaylistNameError(f"a playlist name is at most {NAME_MAX_CHARS} characters ({NAME_MAX_BYTES} bytes "
                                f"in UTF-8); this one is {len(text)} ({len(text.encode('utf-8'))} bytes)")
    return text


def playlist_path(library_folder: Path, name: str) -> Path:
    """Where the playlist `name` (checked) is kept: LIBRARY/playlists/NAME.m3u8."""
    return Path(library_folder) / PLAYLISTS_FOLDER / (check_playlist_name(name) + PLAYLIST_SUFFIX)


def _one_line(text: str) -> str:
    """`text` with every control character and line break made a space: an #EXTINF title is one line."""
    return " ".join("".join(" " if unicodedata.category(c) in _NOT_TEXT else c for c in text).split())


def _extinf(entry: PlaylistEntry) -> str:
    seconds = -1 if entry.duration_s is None else max(0, round(entry.duration_s))  # -1: unknown (the M3U rule)
    title = _one_line(entry.title or "") or entry.path.stem
    artist = _one_line(entry.artist or "")
    return f"#EXTINF:{seconds},{artist} - {title}" if artist else f"#EXTINF:{seconds},{title}"


def entry_location(track: Path, playlist: Path, root: Path) -> str:
    """How the playlist file at `playlist` names `track`: relative to the playlist's folder (with / between
    folders) when the track lies under `root`, else its absolute path. Paths are made absolute without resolving
    links: a track reached through a link keeps that path, as the user laid it out."""
    track_abs, folder = Path(os.path.abspath(track)), Path(os.path.abspath(playlist)).parent
    if track_abs.is_relative_to(os.path.abspath(root)):
        try:
            relative = Path(os.path.relpath(track_abs, folder)).as_posix()
        except ValueError:  # another drive (Windows): no relative path exists
            return str(track_abs)
        # A line starting with # is a comment to every M3U reader: "./" keeps such a file a track.
        return "./" + relative if relative.startswith("#") else relative
    return str(track_abs)


def render_m3u8(entries: Iterable[PlaylistEntry], playlist: Path, root: Path | None = None) -> str:
    """The text of the M3U8 file at `playlist` listing `entries` in order (root: see entry_location; default: the
    folder above the playlist's, the library folder for LIBRARY/playlists/NAME.m3u8)."""
    root = Path(os.path.abspath(playlist)).parent.parent if root is None else root
    lines = ["#EXTM3U"]
    for entry in entries:
        location = entry_location(entry.path, playlist, root)
        if any(c in location for c in "\r\n"):
            raise ValueError(f"a path with a line break cannot be written in a playlist: {location!r}")
        lines += [_extinf(entry), location]
    return "\n".join(lines) + "\n"


def write_m3u8(playlist: Path, entries: Iterable[PlaylistEntry], root: Path | None = None) -> Path:
    """Write the M3U8 `playlist` (render_m3u8), in UTF-8 without a byte-order mark, replacing any file of that
    name atomically: a reader sees the old playlist or the new one. Returns `playlist`."""
    text = render_m3u8(entries, playlist, root)
    write_atomically(Path(playlist), lambda f: f.write(text.encode("utf-8")))
    return Path(playlist)
