"""The web app's command line and start-up: parse the options, add the music that waits, then serve the page
(music_mood.web: one module per tab, assembled by page, served by server)."""
from __future__ import annotations

import argparse
import importlib
import sys

from music_mood.build import build_library, pending_files
from music_mood.cli import (
    add_library_arguments,
    add_model_arguments,
    int_argument,
    model_choice,
    new_parser,
    quiet_request_logs,
)
from music_mood.database import DatabaseError
from music_mood.engines import AUTO, ModelChoice
from music_mood.library import LibraryPaths
from music_mood.live import LiveLibrary
from music_mood.models import BackgroundModels, ModelLoadError, load_clap_audio, load_clap_text
from music_mood.sample import SAMPLE_PACKAGE, import_sample_library
from music_mood.serve import port_busy_message, port_in_use
from music_mood.sources import committed_sources
from music_mood.storage import LibraryBusyError
from music_mood.subsonic import SubsonicError
from music_mood.tags import tagger_of

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860


def prepare_library(library: LiveLibrary, choice: ModelChoice = AUTO) -> None:
    """Before serving: add whatever waits in new_music/ (or unlisted in processed_music/) and bring the sources up
    to date (a folder's files, a server's songs: README, Your existing library); if the library has nothing at
    all (and no source), import the bundled sample tracks first. Progress goes to stderr. A server that cannot be
    listed is a warning: the page serves the library as it is."""
    paths = library.paths
    db = library.current()
    pending, sources = pending_files(paths, db), committed_sources(paths)
    if not len(db) and not pending and not sources:  # a library with sources gets its music from them
        print(f"The library is empty: importing the sample tracks of {SAMPLE_PACKAGE}.", file=sys.stderr)
        try:
            pending = import_sample_library(paths)
        except RuntimeError as e:
            print(f"Warning: {e}; serving an empty library (add music in the Library tab).", file=sys.stderr)
            return
    if not pending and not sources:
        return
    print(f"Adding {len(pending)} audio file(s) to the library in {paths.root}" +
          (f" and reading its {len(sources)} source(s)." if sources else "."), file=sys.stderr)
    try:
        report = build_library(load_clap_audio(library.clap_model, choice), paths, progress=True,
                               tagger=tagger_of(load_clap_text(library.clap_model, choice)))
    except SubsonicError as e:
        print(f"Warning: {e}; serving the library as it is.", file=sys.stderr)
        return
    for line in report.problem_lines():
        print(line, file=sys.stderr)
    print(f"{len(report.added)} added, {len(report.failed)} failed, {len(report.duplicates)} already there.",
          file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser("app.py", "Serve the web page: upload a photo, hear the music of your library that fits it.",
                        "python app.py --port 8080   (then open http://127.0.0.1:8080)")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help="address to listen on; 0.0.0.0 opens the page to your network")
    parser.add_argument("--port", type=int_argument(1, 65535, "a port number"), default=DEFAULT_PORT,
                        help="port to listen on")
    parser.add_argument("--share", action="store_true",
                        help="also publish the page through a public gradio.live link (anyone with it can use it)")
    add_library_arguments(parser)
    add_model_arguments(parser)
    return parser


def main(argv=None) -> int:
    """Parse the options, check the port, add what waits in new_music/ (the sample tracks into an empty library),
    then serve until stopped.

    The page's modules import Gradio at their top, which takes about 8 s; music_mood.web.server is therefore
    imported here, by name, only after the options are parsed and the library is ready: --help, a mistyped option
    and a busy port answer at once, and a library that cannot be used is said before the wait.
    """
    args = build_parser().parse_args(argv)
    quiet_request_logs()
    paths = LibraryPaths.at(args.library, args.vectors, args.meta)
    if port_in_use(args.host, args.port):
        print(f"Error: {port_busy_message(args.port)}", file=sys.stderr)
        return 1
    try:
        library = LiveLibrary(paths, args.clap_model)
        choice = model_choice(args)
        prepare_library(library, choice)
    except (DatabaseError, ModelLoadError, LibraryBusyError, OSError) as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # while adding music: the library is whole (one commit per change)
        print("Interrupted: nothing was lost; the library is as its last commit left it.", file=sys.stderr)
        return 130
    paths.processed_music.mkdir(parents=True, exist_ok=True)
    server = importlib.import_module("music_mood.web.server")
    models = BackgroundModels(args.blip_model, args.clap_model, choice)
    return server.serve(library, models, args.host, args.port, args.share)


if __name__ == "__main__":
    raise SystemExit(main())
