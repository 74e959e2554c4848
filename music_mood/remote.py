"""Tracks that live on a Subsonic server, a library source of kind "subsonic" (sources.py has the folders): how
their records look, the one connection per server that a process keeps, and their audio, read into memory.

A server source is registered as {"kind": "subsonic", "path": the server's address as str(SubsonicServer) gives it
("http://alice@host:4533/prefix": a user, never a password), "added", "excluded"}. Its "path" is its key, as a
folder's is: a track of it has "source" = that address.

A server track's record has, besides what every track has:
- "song_id": the server's id of the song (what playback, downloads and server playlists ask for);
- "file_path": server_file_path(address, song_id), a name and not a path: nothing of it is on this machine's disk;
- "album", and "size" (bytes of the server's file, when it says), next to title, artist and genre as the server
  lists them.
Its "id" and "sha256" come from the downloaded file, as a local file's come from its content, so the same song on
the server and in a folder is one track, not two.
"""
from __future__ import annotations

import threading
from urllib.parse import urlsplit

from music_mood.audio import AudioBytes
from music_mood.subsonic import SubsonicClient, SubsonicError, connect, parse_server, password_for

SERVER_KIND = "subsonic"
SONG_MARK = "#song="  # between a server's address and a song id in a server track's file_path
SERVER_LABEL = "Subsonic server {}"  # how a page names the library's Nth server source (server_labels)
UNKNOWN_SERVER = "a Subsonic server"  # how a page names a server that is no source of the library (anymore)


def is_server_track(track) -> bool:
    """Whether a track record is a server's song (it has no file on this machine)."""
    return bool(track.get("song_id"))


def is_server_source(source: dict) -> bool:
    return source.get("kind") == SERVER_KIND


def server_file_path(address: str, song_id: str) -> str:
    """A server track's file_path: its server's address and song id ("http://alice@host:4533#song=42")."""
    return f"{address}{SONG_MARK}{song_id}"


def server_song(file_path: str) -> tuple[str, str] | None:
    """(address, song id) of a server track's file_path (server_file_path), else None: a soundtrack's plan names
    its pieces by file_path alone. A file of a folder cannot be taken for one: its path is no http(s) address."""
    address, mark, song_id = str(file_path).rpartition(SONG_MARK)
    if not mark or not song_id or not address.startswith(("http://", "https://")):
        return None
    return address, song_id


def page_file_path(track: dict) -> str:
    """How a page (its HTML, its API's answers, the files it serves) names a track where it names one by file: a
    server track by its record id, since its file_path holds its server's address and user, which a page reachable
    from a network (--host, --share) must not tell a visitor; a file by its file_path as stored (relative to the
    library, or a folder source's absolute path). What a page sends back works either way: database.find_track
    and saved_playlists.track_rows take a track's id wherever they take a file path."""
    return str(track["id"]) if is_server_track(track) else str(track["file_path"])


def server_labels(sources: list[dict]) -> dict[str, str]:
    """{address: "Subsonic server N"} of the server sources among `sources` (the committed ones, in the order they
    were added, as --list-sources lists them): how a page names a server. Not its host alone: a host and port name
    a machine of the user's network, which a visitor of a page reached from outside has no business learning, and
    the user name is half of a login. The user's own command line keeps the whole address."""
    servers = [s["path"] for s in sources if is_server_source(s)]
    return {address: SERVER_LABEL.format(n) for n, address in enumerate(servers, 1)}


def address_forms(address: str) -> list[str]:
    """The ways a message may spell the server at `address` (the address itself, its URL without the user, its
    host and port with and without the user), longest first: what a page replaces by the server's label."""
    parts = urlsplit(address)
    host_port = parts.netloc.rpartition("@")[2]
    forms = [address, f"{parts.scheme}://{host_port}{parts.path}", f"{parts.scheme}://{host_port}", parts.netloc,
             host_port]
    return sorted({form for form in forms if form}, key=len, reverse=True)


def hidden_servers(text: str, labels: dict[str, str]) -> str:
    """`text` (a message, a server's error) with every server of `labels` ({address: label}) named by its label."""
    for address, label in labels.items():
        for form in address_forms(address):
            text = text.replace(form, label)
    return text


class ServerConnections:
    """One logged-in client per server address, made on first use and kept for the process: the API version and
    the way to authenticate are learnt once. Thread-safe. The password comes from passwords.password_for, without a
    terminal prompt unless `interactive` (a web page has no terminal). `forget` drops a client after a failure, so
    that the next use connects again (a server restarted, a password changed)."""

    def __init__(self, interactive: bool = False, transport=None):
        self.interactive, self.transport = interactive, transport
        self._clients: dict[str, SubsonicClient] = {}
        self._lock = threading.Lock()

    def client(self, address: str) -> SubsonicClient:
        """The client of the server at `address` (a source's "path"). SubsonicError (one line) when it cannot
        connect or has no password."""
        with self._lock:
            if address not in self._clients:
                server = parse_server(address)
                password = password_for(server, interactive=self.interactive)
                self._clients[address] = connect(server, password, transport=self.transport)
            return self._clients[address]

    def forget(self, address: str) -> None:
        with self._lock:
            client = self._clients.pop(address, None)
        if client is not None:
            client.close()

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()

    def __enter__(self) -> ServerConnections:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def song_audio(self, track: dict) -> AudioBytes:
        """A server track's whole file, downloaded into memory (never to disk), for the decoders
        (audio.decode_audio, audio.decode_stretches). SubsonicError when the server does not give it."""
        address = track["source"]
        try:
            data = self.client(address).download_song(str(track["song_id"]))
        except SubsonicError:
            self.forget(address)
            raise
        return AudioBytes(name=song_file_name(track), data=data)


def song_file_name(track: dict) -> str:
    """How a server track is named in messages: its title, or its song id."""
    return str(track.get("title") or track["song_id"])
