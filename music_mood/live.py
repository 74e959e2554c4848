"""The library as last committed, for a long-running reader (the web app): LiveLibrary reads it again only when its
commit point changed, and says which of its files may be sent."""
from __future__ import annotations

import threading
from pathlib import Path, PurePosixPath

from music_mood.audio import AUDIO_EXTENSIONS
from music_mood.database import Database
from music_mood.library import LibraryPaths, committed_state, load_database
from music_mood.remote import ServerConnections, is_server_source, is_server_track, server_labels
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
        self._servers: dict[str, str] = {}  # the server sources' addresses, as last committed, and their labels
        self.current()  # a library that cannot be read is an error at start-up, not at the first request

    def current(self) -> Database:
        """The database as last committed, read again only when its commit point changed (after an upload, or
        `python music_to_vector.py` run meanwhile); one stat per call otherwise. Raises DatabaseError."""
        with self._lock:  # one reader loads a new version; the requests arriving meanwhile wait for it
            return self._refresh()

    def served_track(self, track_id: str) -> dict | None:
        """The record of the current library's track whose id is `track_id`, or None (any string is safe to pass:
        what the page plays is named by the id alone, so no URL holds a path of this machine or a server's
        address)."""
        with self._lock:
            db = self._refresh()
        rows = db.rows_with("id", track_id) if isinstance(track_id, str) and track_id else []
        return dict(db.tracks[rows[0]]) if rows else None

    def track_file(self, track: dict) -> Path | None:
        """The file to send for a track record of the current library (served_track), or None for a server's song
        (remote.is_server_track: it has no file here) and for a record that names a place it must not.

        A track is sent as listed, through a symlink too (it may point outside the library); a record that names
        a place outside processed_music/ and the registered source folders, or a file that is not audio, is never
        sent, whatever the metadata says.
        """
        if is_server_track(track):
            return None
        with self._lock:
            db, folders = self._refresh(), self._folders
        file_path = str(track["file_path"])
        path = db.root / file_path
        if (".." in PurePosixPath(file_path).parts or path.suffix.lower() not in AUDIO_EXTENSIONS
                or not any(path.is_relative_to(folder) for folder in folders)):
            return None
        return path

    def track_server(self, track: dict) -> str | None:
        """The address of the server to relay a server track (remote.is_server_track) from, or None when it names
        no server source of the current library: only a server registered from the command line is ever asked."""
        with self._lock:
            self._refresh()
            servers = self._servers
        address = track.get("source") if is_server_track(track) else None
        return address if address in servers else None

    def server_labels(self) -> dict[str, str]:
        """{address: label} of the current library's server sources (remote.server_labels): how the page names
        each server, and what it replaces in a message that names one."""
        with self._lock:
            self._refresh()
            return dict(self._servers)

    def _refresh(self) -> Database:
        """The current Database, read again if the commit point changed; the caller holds the lock."""
        version = committed_state(self.paths)  # taken before reading: a commit meanwhile is seen next time
        if self._db is None or version != self._version:
            self._db = load_database(self.paths, clap_model=self.clap_model)
            sources = committed_sources(self.paths)
            self._folders = [self.paths.processed_music] + [Path(s["path"]) for s in sources
                                                            if not is_server_source(s)]
            self._servers = server_labels(sources)
            self._version = version
        return self._db
