"""Serving the library's audio over HTTP, decided per request from the library as it is now, and checking the port
before a server starts."""
from __future__ import annotations

import errno
import os
import socket
import stat

from music_mood.library import DatabaseError, LiveLibrary

TRACK_ROUTE = "/track/"  # + a track's file_path: the only files of the library the server sends


def track_response(library: LiveLibrary, file_path: str):
    """GET /track/<file_path>: the audio of one track of the library as it is now, decided per request.

    403 for anything that is not a track (the database, a note dropped into processed_music/, the rest of the
    disk), 404 for a listed track whose file is gone. Starlette's FileResponse answers Range requests (206),
    which players use to start at a track's best moment.
    """
    from starlette.responses import FileResponse, PlainTextResponse

    try:
        path = library.track_file(file_path)
    except DatabaseError as e:
        return PlainTextResponse(f"The music database cannot be used: {e}", status_code=503)
    if path is None:
        return PlainTextResponse("Not a track of this library.", status_code=403)
    try:
        found = os.stat(path)  # through a symlink: the track's audio, wherever it is kept
    except OSError:
        found = None
    if found is None or not stat.S_ISREG(found.st_mode):
        return PlainTextResponse("This track's file is missing from the library folder.", status_code=404)
    return FileResponse(path, stat_result=found)


def track_routes(library: LiveLibrary) -> list:
    """The server's route for the library's audio, in place of Gradio's file route, whose allowed and blocked
    paths are fixed at launch and so could not follow the library as it changes."""
    from starlette.routing import Route

    def endpoint(request):
        return track_response(library, request.path_params["file_path"])

    return [Route(TRACK_ROUTE + "{file_path:path}", endpoint, methods=["GET"])]  # HEAD is answered too


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
