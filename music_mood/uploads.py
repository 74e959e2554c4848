"""Adding files that a user uploaded: safe names, copies into new_music/, the shared builder, and removing only the
copies that were not added."""
from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path

from music_mood.audio import AUDIO_EXTENSIONS
from music_mood.build import build_library
from music_mood.database import DatabaseError
from music_mood.library import LibraryPaths
from music_mood.storage import LibraryBusyError, copy_file


class NotUploadedError(ValueError):
    """A request named a file that is not one of the server's uploads: a path elsewhere on the server, or one that
    leads out of the upload folder (a symlink, `..`). The message is the same whatever the path is, so that it tells
    nothing about the server's files."""

    def __init__(self):
        super().__init__("not an uploaded file: send the file itself (upload it), not a path on the server")


def uploaded_file(path: str | os.PathLike, upload_dir: str | os.PathLike) -> Path:
    """`path`, resolved, if it is inside `upload_dir` (the folder the server's uploads land in), else
    NotUploadedError.

    Both are resolved first (symlinks followed, `..` and relative parts gone), so a link in the upload folder to a
    file elsewhere, or a path that climbs out of it, is refused; the folder itself is no upload either. Nothing is
    opened: whether `path` exists changes nothing in the answer.
    """
    upload_dir = Path(os.path.realpath(upload_dir))
    if not isinstance(path, (str, os.PathLike)) or not str(path) or "\0" in str(path):
        raise NotUploadedError()
    resolved = Path(os.path.realpath(os.path.abspath(path)))
    if resolved == upload_dir or not resolved.is_relative_to(upload_dir):
        raise NotUploadedError()
    return resolved


def upload_name(name: str) -> str:
    """The upload's own name, in any script the file system takes, made unable to name a folder or a hidden file:
    folders (either slash) and leading dots go, and NUL and control characters, which no file name needs."""
    name = re.split(r"[/\\]", name)[-1]
    return "".join(c for c in name if unicodedata.category(c) != "Cc").lstrip(".") or "upload"


def mood_folder(mood: str) -> str:
    """The one folder level under new_music/ that becomes a track's mood; never a path."""
    mood = re.sub(r"[^\w -]", "", (mood or "").strip()).strip()
    return mood.lower()


def add_uploads(paths: LibraryPaths, clap_audio, files, mood: str = "", progress=None,
                tagger=None) -> tuple[dict, list[str]]:
    """Copy uploaded audio files into new_music/[mood/] and embed them with the shared builder, which commits them.

    Returns ({"added": their file_paths, "failed": how many failed, "not_added": how many of them were not
    added}, one line for the user per file that was not added, and why). Only the copies this call made are
    removed again when they fail or are already in the library; any other file the builder reports (a user's
    file in processed_music/) is named and left alone.
    """
    folder = paths.new_music / mood_folder(mood) if mood_folder(mood) else paths.new_music
    problems, copies = [], {}  # the copy in new_music/ -> the upload's name
    made_folder = folder != paths.new_music and not folder.exists()
    for source in files or []:
        source = Path(source)
        name = upload_name(source.name)
        if Path(name).suffix.lower() not in AUDIO_EXTENSIONS:
            problems.append(f"{name}: not an audio file (the library takes {', '.join(AUDIO_EXTENSIONS)})")
            continue
        target, n = folder / name, 2
        while target.exists():
            target = target.with_name(f"{Path(name).stem} ({n}){Path(name).suffix}")
            n += 1
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            copy_file(source, target)  # whole or not at all: a crash leaves no torn file for the next build
        except FileNotFoundError:  # the same file uploaded twice at once: the first request took it
            problems.append(f"{name}: the uploaded file is gone from the server; upload it again")
            continue
        copies[target] = name
    if not copies:
        _discard_copies([], folder if made_folder else None)
        return {"added": [], "failed": 0, "not_added": len(problems)}, problems
    if progress is not None:
        progress(0, desc=f"Embedding {len(copies)} file(s)")
    try:
        report = build_library(clap_audio, paths, files=list(copies), lock_timeout=10, progress=progress is not None,
                               tagger=tagger)
    except (DatabaseError, LibraryBusyError):
        _discard_copies(copies, folder if made_folder else None)
        raise
    others, failed = [], 0
    for source, reason in report.failed:
        if source in copies:
            problems.append(f"{copies[source]}: {reason}")
            failed += 1
        else:
            others.append(f"{_library_name(paths, source)}: {reason} (not part of this upload; left where it is)")
    for source, listed_as in report.duplicates:
        if source in copies:
            problems.append(f"{copies[source]}: already in the library as {listed_as}")
        else:
            others.append(f"{_library_name(paths, source)}: already in the library as {listed_as} (not part of "
                          f"this upload; left where it is)")
    _discard_copies([source for source, _ in report.failed + report.duplicates if source in copies],
                    folder if made_folder else None)
    result = {"added": [r["file_path"] for r in report.added], "failed": failed, "not_added": len(problems)}
    return result, problems + others


def _discard_copies(copies, made_folder: Path | None = None) -> None:
    """Remove copies this request made in new_music/ and that were not added: they would only fail again.

    `made_folder`, the mood folder this request created, goes too if that leaves it empty; rmdir refuses a
    folder holding anything, so a file put there meanwhile keeps it.
    """
    for copy in copies:
        copy.unlink(missing_ok=True)
    if made_folder is not None:
        try:
            made_folder.rmdir()
        except OSError:  # not empty (or already gone): nothing of ours to remove
            pass


def _library_name(paths: LibraryPaths, path: Path) -> str:
    """`path` as the user knows it: relative to the library folder when it is inside it."""
    return path.relative_to(paths.root).as_posix() if path.is_relative_to(paths.root) else str(path)
