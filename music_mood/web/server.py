"""Serving the page: launch it with the library's track routes, load the models while it is up, and stop cleanly on
Ctrl-C or SIGTERM. Importing this module imports Gradio (about 8 s): app.py imports it only once its arguments
are parsed and its library is ready, so that --help and a mistyped option answer at once."""
from __future__ import annotations

import mimetypes
import os
import sys
import threading
import time

from music_mood.cli import StopSignals
from music_mood.database import EMPTY_LIBRARY
from music_mood.live import LiveLibrary
from music_mood.memory import freeze_loaded_objects
from music_mood.models import BackgroundModels
from music_mood.serve import RenderFolders, port_busy_message, port_in_use, render_routes, track_routes
from music_mood.web.page import CSS, build_app

MAX_UPLOAD = "200mb"
STOP_POLL_S = 0.2  # how often the main thread looks for a stop request (SIGINT, SIGTERM) while serving

# The track route sends the type mimetypes guesses; without /etc/mime.types Python knows no .opus or .m4a, and
# the browser would get application/octet-stream.
mimetypes.add_type("audio/ogg", ".opus")
mimetypes.add_type("audio/mp4", ".m4a")
mimetypes.add_type("audio/flac", ".flac")


def launch(library: LiveLibrary, models: BackgroundModels, renders: RenderFolders, host: str, port: int,
           share: bool = False):
    """Build the page and start serving it in Gradio's threads (returning at once): the one launch the app and the
    tests' in-process page share. Raises OSError when it cannot listen."""
    demo = build_app(library, models, renders)
    # No allowed_paths: Gradio serves nothing of the library; its audio goes through track_routes alone, and the
    # soundtracks the page renders through render_routes.
    demo.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=True,
                app_kwargs={"routes": track_routes(library) + render_routes(renders)},
                max_file_size=MAX_UPLOAD, css=CSS, ssr_mode=False, quiet=True)
    return demo


def serve(library: LiveLibrary, models: BackgroundModels, host: str, port: int, share: bool = False) -> int:
    """Serve the page at host:port (and a gradio.live link with `share`) until Ctrl-C or SIGTERM; `models` load
    meanwhile, in a thread of their own, so a visitor sees that they are loading rather than no page at all.
    Returns the exit code: 0, or 1 when the server cannot listen or the models cannot load (said on stderr)."""
    renders = RenderFolders()
    try:
        demo = launch(library, models, renders, host, port, share)
    except OSError:  # Gradio's message tells to edit launch(); the user has flags
        reason = (port_busy_message(port) if port_in_use(host, port) else
                  f"cannot listen on {host}:{port}; check --host and --port")
        print(f"Error: {reason}", file=sys.stderr)
        return 1
    # Gradio's own banner would tell users to edit launch(); this one names the flags.
    print(f"Serving at {demo.local_url}" + (f" and {demo.share_url}" if demo.share_url else
                                            " (this machine only; --host 0.0.0.0 or --share to open it)"),
          file=sys.stderr)
    # A stop request (Ctrl-C, kill, a service manager) closes the server, so that Gradio's shutdown removes the
    # uploads it still keeps instead of leaving them in its temp folder. The signals only set a flag this loop
    # polls: raised as KeyboardInterrupt into the model loading, one was swallowed by a weakref callback and the
    # app served on. The models load in a thread of their own, so the main thread is free to see the flag; the
    # handlers stay until the clean-up is done, so that a second signal cannot cut it short.
    with StopSignals(raise_interrupt=False) as stop:
        try:
            print(f"Loading models: {models.blip_model}, {models.clap_model} ({models.choice.precision}, backend "
                  f"{models.choice.backend})...", file=sys.stderr)
            loader = threading.Thread(target=models.load, name="load-models", daemon=True)
            loader.start()
            code = _serve_until_stopped(library, models, stop)
        finally:
            demo.close(verbose=False)
            library.servers.close()
            renders.close()  # every soundtrack rendered for a visitor: they lived in the system's temporary folder
    if loader.is_alive():
        # Stopped while the models load: the loader is inside torch's or ONNX Runtime's native code, and tearing
        # the interpreter down under it aborts the process ("terminate called without an active exception",
        # SIGABRT). Everything the app must clean up is cleaned up above, so leave without the teardown.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _serve_until_stopped(library: LiveLibrary, models: BackgroundModels, stop: StopSignals) -> int:
    """Say when the models are loaded (or why they cannot be: exit code 1), then wait for a stop request."""
    while not (stop.requested or models.ready.wait(STOP_POLL_S)):
        pass
    if not stop.requested:
        if models.error:
            print(f"Error: {models.error}", file=sys.stderr)
            return 1
        freeze_loaded_objects()  # requests' collections no longer scan the models' objects
        tracks = len(library.current())
        print(f"Models loaded; {tracks} tracks in {library.paths.root}.", file=sys.stderr)
        if not tracks:
            print(f"Warning: {EMPTY_LIBRARY}", file=sys.stderr)
    while not stop.requested:  # serve until asked to stop
        time.sleep(STOP_POLL_S)
    print("Stopping the server.", file=sys.stderr)
    return 0
