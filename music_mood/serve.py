"""Serving the library's audio over HTTP by track id, decided per request from the library as it is now (a server's
songs relayed from their server); the files the page renders for one request (a slideshow), from temporary folders
of their own; and checking the port before a server starts."""
from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import socket
import stat
import sys
import tempfile
import threading
from pathlib import Path

from music_mood.database import DatabaseError
from music_mood.live import LiveLibrary
from music_mood.remote import ServerConnections, is_server_track
from music_mood.subsonic import ERROR_NOT_FOUND, SubsonicAPIError, SubsonicError

TRACK_ROUTE = "/track/"  # + a track's id: the only audio of the library the server sends
_TRACK_ID = re.compile(r"[0-9a-f]{16}")  # a record's id: the first 16 hex digits of its file's sha256
NOT_A_TRACK = "Not a track of this library."
RENDER_ROUTE = "/slideshow/"  # + a render's token + "/" + a file name: what the page rendered for one request
# What a render folder may hold and how each is sent: players need the right type (an MP4 sent as
# application/octet-stream is not played), and nothing else in such a folder is ever served.
RENDER_TYPES = {".mp4": "video/mp4", ".m4a": "audio/mp4", ".wav": "audio/wav", ".json": "application/json",
                ".m3u8": "application/vnd.apple.mpegurl", ".jpg": "image/jpeg",
                # editors' timelines (timeline.py): OpenTimelineIO's JSON, Final Cut Pro 7 XML, a CMX 3600 EDL
                ".otio": "application/json", ".xml": "application/xml", ".edl": "text/plain"}
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,64}")
_NAME = re.compile(r"(?:[A-Za-z0-9_-][A-Za-z0-9_.-]*/)?[A-Za-z0-9_-][A-Za-z0-9_.-]*")  # a file, or one folder down


def track_url(track_id: str) -> str:
    """The URL of a library track on this server, by its record's id: never a path of this machine or a server's
    address, which a URL would show to the browser and invite it to change."""
    return TRACK_ROUTE + track_id


def track_response(library: LiveLibrary, track_id: str, range_header: str | None = None):
    """GET /track/<id>: the audio of one track of the library as it is now, decided per request.

    403 for anything that is not the id of a track of the current library (a path, `..`, a file of a source that
    the library does not list, a server's URL), 404 for a listed track whose file is gone. A file is sent by
    Starlette's FileResponse, which answers Range requests (206): players use them to start at a track's best
    moment. A server's song is relayed from its server (server_track_response).
    """
    from starlette.responses import FileResponse, PlainTextResponse

    if not isinstance(track_id, str) or not _TRACK_ID.fullmatch(track_id):
        return PlainTextResponse(NOT_A_TRACK, status_code=403)
    try:
        track = library.served_track(track_id)
    except DatabaseError as e:
        return PlainTextResponse(f"The music database cannot be used: {e}", status_code=503)
    if track is not None and is_server_track(track):
        if library.track_server(track) is None:
            return PlainTextResponse(NOT_A_TRACK, status_code=403)
        return server_track_response(library.servers, track, range_header)
    path = None if track is None else library.track_file(track)
    if path is None:
        return PlainTextResponse(NOT_A_TRACK, status_code=403)
    try:
        found = os.stat(path)  # through a symlink: the track's audio, wherever it is kept
    except OSError:
        found = None
    if found is None or not stat.S_ISREG(found.st_mode):
        return PlainTextResponse("This track's file is missing from the library folder.", status_code=404)
    return FileResponse(path, stat_result=found)


def server_track_response(servers: ServerConnections, track: dict, range_header: str | None):
    """A server track's audio, relayed from its server's `stream` (SubsonicClient.proxy_stream) with the browser's
    Range header: the server's status (200, 206, 416), only the PROXY_HEADERS it sent, and its bytes as they come.

    The browser sees this app's URL only: no address, user or credential of the server is in the answer. A server
    that cannot be reached or refuses is a 502 of one line (the reason, which names the server, goes to the log),
    and the connection is forgotten so that the next request connects again (a server restarted, a password
    changed). The upstream is closed when the body ends or the browser goes away: a player that seeks drops
    requests all the time, and each would otherwise hold a connection to the server.
    """
    from starlette.background import BackgroundTask
    from starlette.concurrency import iterate_in_threadpool
    from starlette.responses import PlainTextResponse, StreamingResponse

    address = track["source"]
    try:
        upstream = servers.client(address).proxy_stream(str(track["song_id"]), range_header)
    except SubsonicAPIError as e:
        if e.code == ERROR_NOT_FOUND:
            return PlainTextResponse("This track is no longer on its music server.", status_code=404)
        return _server_failed(servers, address, e)
    except SubsonicError as e:
        return _server_failed(servers, address, e)

    async def body():
        try:
            async for chunk in iterate_in_threadpool(upstream.body):
                yield chunk
        finally:
            upstream.close()

    return StreamingResponse(body(), status_code=upstream.status, headers=upstream.headers,
                             background=BackgroundTask(upstream.close))


def _server_failed(servers: ServerConnections, address: str, error: Exception):
    from starlette.responses import PlainTextResponse

    servers.forget(address)
    print(f"Warning: a server track could not be played: {error}", file=sys.stderr)
    return PlainTextResponse("This track's music server cannot be reached now; try again later.", status_code=502)


def track_routes(library: LiveLibrary) -> list:
    """The server's route for the library's audio, in place of Gradio's file route, whose allowed and blocked
    paths are fixed at launch and so could not follow the library as it changes. The whole rest of the path is
    taken, so that a forged path (/track/etc/passwd) is refused here, not left to another route."""
    from starlette.routing import Route

    def endpoint(request):
        return track_response(library, request.path_params["track_id"], request.headers.get("range"))

    return [Route(TRACK_ROUTE + "{track_id:path}", endpoint, methods=["GET"])]  # HEAD is answered too


class RenderFolders:
    """Folders for what the page renders for one request (a slideshow's video, soundtrack, playlist, plan and
    thumbnails), never in the library: each under one temporary root of this server (made on first use, in the
    system's temporary folder), named by an unguessable token that is also its URL, RENDER_ROUTE + token + "/" +
    file name, so that one visitor cannot fetch another's.

    Who removes what: the request that made a folder, when it fails or is cancelled; the session, when its next
    one is ready or when the session ends; close(), everything, when the server stops.
    """

    def __init__(self, parent: Path | None = None):
        self.parent = parent
        self._root: Path | None = None
        self._lock = threading.Lock()

    @property
    def root(self) -> Path:
        with self._lock:
            if self._root is None:
                self._root = Path(tempfile.mkdtemp(prefix="music-mood-renders-", dir=self.parent))
            return self._root

    def new(self) -> tuple[str, Path]:
        """(token, folder) of a new, empty folder."""
        token = secrets.token_urlsafe(24)
        folder = self.root / token
        folder.mkdir()
        return token, folder

    def folder(self, token: str | None) -> Path | None:
        """The folder of `token` if it still exists, else None (any string is safe to pass)."""
        if self._root is None or not isinstance(token, str) or not _TOKEN.fullmatch(token):
            return None
        folder = self._root / token
        return folder if folder.is_dir() and not folder.is_symlink() else None

    def file(self, token: str, name: str) -> Path | None:
        """The rendered file `name` of `token`'s folder, or None: only a regular file of a RENDER_TYPES kind
        inside that folder, however `name` is spelled."""
        folder = self.folder(token)
        if folder is None or not _NAME.fullmatch(name) or Path(name).suffix.lower() not in RENDER_TYPES:
            return None
        path = folder / name
        try:
            if path.is_symlink() or not path.resolve().is_relative_to(folder.resolve()) or not path.is_file():
                return None
        except OSError:
            return None
        return path

    def remove(self, token: str | None) -> None:
        """Remove `token`'s folder and everything in it (nothing when it is gone already)."""
        folder = self.folder(token)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        """Remove every folder: the server stops."""
        with self._lock:
            if self._root is not None:
                shutil.rmtree(self._root, ignore_errors=True)
                self._root = None


def render_response(folders: RenderFolders, token: str, name: str):
    """GET /slideshow/<token>/<name>: a file rendered for one request, with its type; Starlette's FileResponse
    answers Range requests (206), which a video player needs to seek. 404 for anything else, or once removed."""
    from starlette.responses import FileResponse, PlainTextResponse

    path = folders.file(token, name)
    if path is None:
        return PlainTextResponse("Not found: this soundtrack was replaced by a newer one, or has expired.",
                                 status_code=404)
    return FileResponse(path, media_type=RENDER_TYPES[path.suffix.lower()])


def render_routes(folders: RenderFolders) -> list:
    """The server's route for rendered files, beside track_routes."""
    from starlette.routing import Route

    def endpoint(request):
        return render_response(folders, request.path_params["token"], request.path_params["name"])

    return [Route(RENDER_ROUTE + "{token}/{name:path}", endpoint, methods=["GET"])]


def port_in_use(host: str, port: int) -> bool:
    """Whether something already listens on host:port. Asked before the start-up work, which can take minutes,
    and so that the user reads which flag to change rather than Gradio's advice to edit launch()."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror:
        return False  # not a port question: launch() reports the address
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: TIME_WAIT is no conflict
        try:
            probe.bind(address)
        except OSError as e:
            return e.errno == errno.EADDRINUSE
    return False


def port_busy_message(port: int) -> str:
    return f"port {port} is in use (another app.py?); pass --port, e.g. --port {port + 1 if port < 65535 else port - 1}"
