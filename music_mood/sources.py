"""The library's sources: folders of the user's music indexed where they are (kind "folder"), beside
processed_music/. A source is read, never written: no file inside it is created, moved, renamed or deleted.

Stored in the committed metadata (library.save_database), so a source is added or removed in one commit with its
tracks: "sources": [{"kind": "folder", "path": absolute resolved path, "added": ISO time, "excluded": [sha256 of
files --remove took out, which later builds leave out until --restore]}]. A track of a source has "source": that
path, and its file_path is absolute (relative to the library folder when the source lies inside it); a track
without "source" lives in processed_music/ (every library made before sources). A Subsonic server is a source of kind
"subsonic" whose "path" is its address (remote.py, server_sources.py); the functions here about folders skip it.

The scan cache (SCAN_CACHE_SUFFIX beside the vectors) keeps (path, size, mtime_ns) → sha256 of the source files
read, and each source's last scan time: a re-run hashes only files that changed. It is a cache, never a commit:
deleting it costs one re-hash of the files not listed in the library (duplicates, excluded files).
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from music_mood.audio import file_sha256, find_audio_files
from music_mood.database import DatabaseError
from music_mood.datafiles import read_metadata
from music_mood.library import LibraryPaths
from music_mood.storage import write_atomically

FOLDER_KIND = "folder"
SCAN_CACHE_SUFFIX = "_scan_cache.json"
REMOVED_FOLDER = "removed"  # in the library folder: where --remove puts a processed_music/ track's file


class SourceError(ValueError):
    """A folder that cannot be a source (or a path that names none), with the reason in one line."""


def committed_sources(paths: LibraryPaths) -> list[dict]:
    """The sources as last committed (copies; [] for a library without any, none at all, or one whose metadata
    cannot be read: a --rebuild of it starts again without sources)."""
    try:
        meta = read_metadata(paths.metadata) if paths.metadata.exists() else None
    except DatabaseError:
        return []
    return [dict(s, excluded=list(s.get("excluded", []))) for s in meta.get("sources", [])] \
        if isinstance(meta, dict) else []


def library_path(path: Path, paths: LibraryPaths) -> str:
    """A file's file_path as the library stores it: relative to the library folder, else absolute (a source)."""
    return path.relative_to(paths.root).as_posix() if path.is_relative_to(paths.root) else path.as_posix()


def folder_sources(sources: list[dict]) -> list[dict]:
    """The folder sources of `sources` (not the servers)."""
    return [s for s in sources if s.get("kind", FOLDER_KIND) == FOLDER_KIND]


def source_of(path: Path, sources: list[dict]) -> dict | None:
    """The folder source that holds `path`, or None."""
    return next((s for s in folder_sources(sources) if path.is_relative_to(s["path"])), None)


def check_new_folder(folder: str | Path, paths: LibraryPaths, sources: list[dict]) -> Path:
    """The folder to register, absolute and resolved; SourceError saying why it cannot be one."""
    path = Path(folder).expanduser().resolve()
    if not path.exists():
        raise SourceError(f"{path} does not exist")
    if not path.is_dir():
        raise SourceError(f"{path} is not a folder")
    own = (paths.new_music, paths.processed_music, paths.root / REMOVED_FOLDER)
    if any(path.is_relative_to(f) for f in own) or paths.root.is_relative_to(path):
        raise SourceError(f"{path} is the library's own folder or holds it; drop files into new_music/ instead")
    for source in folder_sources(sources):
        other = Path(source["path"])
        if path == other:
            raise SourceError(f"{path} is already a source")
        if path.is_relative_to(other) or other.is_relative_to(path):
            raise SourceError(f"{path} overlaps the source {other}; remove that one first")
    return path


def new_source(path: Path) -> dict:
    return {"kind": FOLDER_KIND, "path": path.as_posix(), "added": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "excluded": []}


def find_source(sources: list[dict], folder: str | Path, key: str | None = None) -> dict:
    """The registered source of `folder` (as given, or resolved; or `key`, a server's normalised address);
    SourceError when none."""
    wanted = {str(folder), Path(folder).expanduser().resolve().as_posix(), key}
    for source in sources:
        if source["path"] in wanted:
            return source
    raise SourceError(f"{folder} is not a source of this library (see --list-sources)")


def source_candidates(sources: list[dict], listed: set[str], paths: LibraryPaths) -> list[Path]:
    """The audio files of every reachable source that the library does not list at their path: found by a walk and
    a set look-up, no stat beyond the walk's and no hash (an unchanged, listed file costs nothing more)."""
    return [p for s in folder_sources(sources) if Path(s["path"]).is_dir()
            for p in find_audio_files(Path(s["path"])) if library_path(p, paths) not in listed]


class ScanCache:
    """(path, size, mtime_ns) → sha256 of source files, and each source's last scan time (see the module)."""

    def __init__(self, paths: LibraryPaths):
        self.file = paths.vectors.with_name(paths.vectors.stem + SCAN_CACHE_SUFFIX)
        self._lock = threading.Lock()
        try:
            data = json.loads(self.file.read_text(encoding="utf-8"))
            self.files, self.scanned = dict(data["files"]), dict(data["scanned"])
        except (OSError, ValueError, KeyError, TypeError):
            self.files, self.scanned = {}, {}
        self.changed = False

    def sha256(self, path: Path) -> str:
        """The file's sha256, hashed only when its size or mtime changed since it was last hashed."""
        st = os.stat(path)
        key = path.as_posix()
        with self._lock:
            known = self.files.get(key)
        if known and known[0] == st.st_size and known[1] == st.st_mtime_ns:
            return known[2]
        digest = file_sha256(path)
        with self._lock:
            self.files[key], self.changed = [st.st_size, st.st_mtime_ns, digest], True
        return digest

    def remember(self, key: str, size: int, mtime_ns: int | None, sha256: str) -> None:
        """Note a hash read another way (a server song's download: its file_path, its size, no mtime)."""
        with self._lock:
            self.files[key], self.changed = [size, mtime_ns, sha256], True

    def save(self, sources: list[dict]) -> None:
        """Note the scan time of `sources` and write the cache (best effort: it is only a cache); a library
        without sources has none."""
        if not sources and not self.files:
            return
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.scanned = {s["path"]: stamp for s in sources} | {k: v for k, v in self.scanned.items()
                                                               if k not in {s["path"] for s in sources}}
        data = json.dumps({"files": self.files, "scanned": self.scanned}).encode()
        try:
            write_atomically(self.file, lambda f: f.write(data), durable=False)
        except OSError:
            pass


def source_lines(paths: LibraryPaths, tracks: list[dict]) -> list[str]:
    """--list-sources: one line per source, its kind, folder, track count, files left out and last scan."""
    cache = ScanCache(paths)
    counts: dict[str, int] = {}
    for track in tracks:
        counts[track.get("source") or ""] = counts.get(track.get("source") or "", 0) + 1
    lines = [f"library  {paths.processed_music}  {counts.get('', 0)} tracks"]
    for s in committed_sources(paths):
        excluded = f", {len(s['excluded'])} removed by hand" if s.get("excluded") else ""
        reach = "" if s["kind"] != FOLDER_KIND or Path(s["path"]).is_dir() else "  (not reachable now)"
        lines.append(f"{s['kind']}  {s['path']}  {counts.get(s['path'], 0)} tracks{excluded}, last scan "
                     f"{cache.scanned.get(s['path'], 'never')}{reach}")
    return lines
