"""The library as last committed, for a long-running reader (the web app): LiveLibrary reads it again only when its
commit point changed, and says which of its files may be sent."""
from __future__ import annotations

import threading
from pathlib import Path, PurePosixPath

from music_mood.audio import AUDIO_EXTENSIONS
from music_mood.database import Database
from music_mood.library import LibraryPaths, committed_state, load_database
from music_mood.remote import ServerConnections
from music_mood.sources import committed_sources


class LiveLibrary:
    """A library as last committed, for a long-running reader (the web app): each request takes one Database from
    current() and uses it throughout, so it sees one version even while a builder commits the next."""

    def __init__(self, paths: LibraryPaths, clap_model: str, servers: ServerConnections | None = None):
        self.paths = paths
        self.clap_model = clap_model
        # The Subsonic servers the library's server tracks live on (remote.py): connected on first use, with no
        # terminal prompt; closed when the page stops.
        self.servers = servers or ServerConnections()
        self._lock = threading.Lock()
        self._db: Database | None = None
        self._version: tuple | None = None
        self._folders: list[Path] = []  # processed_music/ and the folders of the sources, as last committed
        self.current()  # a library that cannot be read is an error at start-up, not at the first request

    def current(self) -> Database:
        """The database as last committed, read again only when its commit point changed (after an upload, or
        `python music_to_vector.py` run meanwhile); one stat per call otherwise. Raises DatabaseError."""
        with self._lock:  # one reader loads a new version; the requests arriving meanwhile wait for it
            return self._refresh()

    def track_file(self, file_path: str) -> Path | None:
        """The file to send for `file_path` when it names a track of the current library, else None.

        A track is sent as listed, through a symlink too (it may point outside the library); a record that names
        a place outside processed_music/ and the registered source folders, or a file that is not audio, is never
        sent, whatever the metadata says. A source's file that the library does not list is not sent either.
        """
        with self._lock:
            db, folders = self._refresh(), self._folders
        if db.row_of_file(file_path) is None and db.row_of_file("/" + file_path) is not None:
            file_path = "/" + file_path  # a source's track, as track_url spells it
        listed = db.row_of_file(file_path) is not None
        parts = PurePosixPath(file_path).parts
        path = db.root / file_path
        if (not listed or ".." in parts or path.suffix.lower() not in AUDIO_EXTENSIONS
                or not any(path.is_relative_to(folder) for folder in folders)):
            return None
        return path

    def _refresh(self) -> Database:
        """The current Database, read again if the commit point changed; the caller holds the lock."""
        version = committed_state(self.paths)  # taken before reading: a commit meanwhile is seen next time
        if self._db is None or version != self._version:
            self._db = load_database(self.paths, clap_model=self.clap_model)
            self._folders = [self.paths.processed_music] + [Path(s["path"]) for s in committed_sources(self.paths)]
            self._version = version
        return self._db
