"""The library side: audio files → whole-track CLAP vectors → the music database, written so no music is lost.

`python music_to_vector.py` embeds what waits in new_music/ and moves it to processed_music/. The work is done by
the music_mood package: audio.py reads, embed.py embeds, build.py commits through library.py, which holds the
database contract; import those from the package, not from here.
"""
from __future__ import annotations

import argparse
import contextlib
import sys

from music_mood.build import build_library
from music_mood.cli import (
    add_library_arguments,
    add_model_arguments,
    int_argument,
    model_choice,
    new_parser,
    print_lines,
    quiet_request_logs,
)
from music_mood.cluster_pool import DEADLINE_FLOOR_S
from music_mood.database import DatabaseError, UnknownTrackError
from music_mood.display import format_bpm, library_lines
from music_mood.edit import (
    EDITABLE_FIELDS,
    REMOVED_FOLDER,
    FieldValueError,
    add_source,
    committed_track_count,
    remove_source,
    remove_tracks,
    restore_tracks,
    set_fields,
)
from music_mood.library import LibraryPaths, MoveBlockedError, load_database
from music_mood.remote import ServerConnections, is_server_source
from music_mood.sample import SAMPLE_PACKAGE, import_sample_library
from music_mood.sources import SourceError, source_lines
from music_mood.storage import LibraryBusyError
from music_mood.subsonic import SubsonicError

__all__ = ["build_parser", "edit_library", "main"]  # the package holds the rest: import it from there


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser("music_to_vector.py",
                        "Embed the audio files dropped into new_music/ with CLAP, add them to the music database and "
                        "move them to processed_music/.",
                        "cp ~/Music/*.mp3 new_music/calm/ && python music_to_vector.py")
    add_library_arguments(parser)
    add_model_arguments(parser, blip=False)
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--rebuild", action="store_true",
                        help="re-embed every file in processed_music/ and new_music/ (after a model change)")
    action.add_argument("--list", action="store_true", help="print the library and exit")
    action.add_argument("--sample", action="store_true",
                        help=f"import the 28 MIT-licensed tracks of the {SAMPLE_PACKAGE} package")
    action.add_argument("--remove", nargs="+", metavar="TRACK",
                        help=f"remove tracks (a file path or an id of --list) from the library; their files move to "
                             f"{REMOVED_FOLDER}/ in the library folder, never deleted (a source's file stays where "
                             f"it is, left out of later builds until --restore)")
    action.add_argument("--add-source", metavar="FOLDER|URL",
                        help="index a folder of your music where it is, or a Subsonic server (http://USER@HOST:PORT; "
                             "password from $MUSIC_MOOD_SUBSONIC_PASSWORD or asked) (README: Your existing library); "
                             "every later run adds, follows and drops its music; nothing in it is ever written")
    action.add_argument("--list-sources", action="store_true",
                        help="print the library's sources with their track counts and last scan, and exit")
    action.add_argument("--remove-source", metavar="FOLDER|URL",
                        help="take a source out of the library with its tracks; its files are not touched")
    action.add_argument("--restore", nargs="+", metavar="FILE",
                        help="let files of a source that --remove took out back in (the next run adds them)")
    for name in EDITABLE_FIELDS:
        parser.add_argument(f"--set-{name}", nargs=2, action="append", metavar=("TRACK", name.upper()),
                            help=f"correct a track's {name} (repeatable; kept by --rebuild)")
    parser.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                        help="decode and embed on a Ray cluster: its head's ADDRESS (host:port), else $RAY_ADDRESS, "
                             "else a local cluster on this machine; same library, one commit (README: Large "
                             "catalogues)")
    parser.add_argument("--ray-timeout", type=int_argument(1, 7 * 86400, "a whole number of seconds"),
                        default=int(DEADLINE_FLOOR_S), metavar="SECONDS",
                        help="with --ray: the least time a file may take on the cluster before it is reported as "
                             "failed (larger files get more), and how long the run may get nothing back before it "
                             "ends, committing nothing")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet_request_logs()
    paths = LibraryPaths.at(args.library, args.vectors, args.meta)
    edits = [(key, name, value) for name in EDITABLE_FIELDS for key, value in getattr(args, f"set_{name}") or []]
    if edits and (args.rebuild or args.list or args.sample or args.remove):
        parser.error("--set-... corrects tracks on its own: not with --rebuild, --list, --sample or --remove")
    if args.ray is not None and (args.list or args.remove or edits):
        parser.error("--ray builds the library: not with --list, --remove or --set-...")
    if args.remove or edits:
        return edit_library(paths, args.remove, edits)
    if args.add_source or args.remove_source or args.list_sources or args.restore:
        return edit_sources(paths, args)
    try:
        if args.list:
            db = load_database(paths)
            if not len(db):
                print("The library is empty: put audio files in new_music/ and run python music_to_vector.py "
                      "(or --sample for the bundled tracks).", file=sys.stderr)
                return 0
            print_lines(library_lines(db.tracks))
            return 0
        files = import_sample_library(paths) if args.sample else None
        if files is not None and not files:
            print("The sample tracks are already in the library.", file=sys.stderr)
            return 0
        from music_mood.models import load_clap_audio, load_clap_text
        from music_mood.tags import tagger_of

        with contextlib.ExitStack() as stack:
            if args.ray is not None:
                from music_mood import cluster  # imports Ray: only for --ray

                stack.enter_context(cluster.connect(args.ray or None))  # before the models: a bad address fails now
            choice = model_choice(args)
            clap = load_clap_audio(args.clap_model, choice)
            tagger = tagger_of(load_clap_text(args.clap_model, choice))  # automatic tags
            print(f"Updating the library in {paths.root} with {clap.name}...", file=sys.stderr)
            # Tracks added before tempos were stored get theirs now: their files are decoded again, not embedded.
            if args.ray is None:
                servers = stack.enter_context(contextlib.closing(ServerConnections(interactive=True)))
                report = build_library(clap, paths, rebuild=args.rebuild, files=files, tagger=tagger,
                                       fill_tempo=True, servers=servers)
            else:
                result = cluster.build_library_on_ray(clap, paths, choice,
                                                      rebuild=args.rebuild, files=files, tagger=tagger,
                                                      fill_tempo=True, timeout_s=args.ray_timeout)
                report = result.report
                print(result.summary(), file=sys.stderr)
    except KeyboardInterrupt:
        # Every change is one commit: the library is whole, as before this run or as its commit left it.
        print("Interrupted: nothing was lost; the library is as its last commit left it. Run again to finish.",
              file=sys.stderr)
        return 130
    except Exception as e:
        known = (DatabaseError, LibraryBusyError, RuntimeError, OSError, ValueError, SubsonicError)
        if not isinstance(e, known):
            raise
        print(f"Error: {e}", file=sys.stderr)
        return 1
    for line in report.problem_lines():
        print(line, file=sys.stderr)
    for record in report.added:
        print(f"added  {record['file_path']}  ({record['duration_s']:.1f} s, {record['segment_count']} windows, "
              f"{format_bpm(record['bpm'], 'no beat found')})")
    for record in report.tempo_read:
        print(f"tempo  {record['file_path']}  ({format_bpm(record['bpm'], 'no beat found')})")
    tempos = f", the tempo of {len(report.tempo_read)} read" if report.tempo_read else ""
    print(f"{len(report.added)} added, {len(report.failed)} failed{tempos}, {report.tracks} tracks in the library.",
          file=sys.stderr)
    return 1 if report.failed else 0


def edit_library(paths: LibraryPaths, remove: list[str] | None, edits: list[tuple[str, str, str]]) -> int:
    """--remove or --set-FIELD: one commit, no model loaded; an unknown track is one line and exit 1."""
    try:
        if remove:
            removed, problems = remove_tracks(paths, remove)
        else:
            corrected, problems = set_fields(paths, edits)
    except MoveBlockedError as e:
        print(f"Error: {e}; nothing was changed", file=sys.stderr)
        return 1
    except FieldValueError as e:
        print(f"Error: {e}; nothing was changed.", file=sys.stderr)
        return 1
    except (UnknownTrackError, DatabaseError, LibraryBusyError, OSError) as e:
        print(f"Error: {e.args[0] if isinstance(e, UnknownTrackError) else e}", file=sys.stderr)
        return 1
    for line in problems:
        print(line, file=sys.stderr)
    if remove:
        for record, target in removed:
            where = (target.relative_to(paths.root).as_posix() if target else
                     "its file stays in its source, left out until --restore" if record.get("source")
                     else "its file was already gone")
            print(f"removed  {record['file_path']}  -> {where}")
        print(f"{len(removed)} removed, {committed_track_count(paths)} tracks in the library.", file=sys.stderr)
    else:
        for record, name, old in corrected:
            print(f"set  {record['file_path']}  {name}: {old!r} -> {record[name]!r}")
    return 0


def edit_sources(paths: LibraryPaths, args: argparse.Namespace) -> int:
    """--add-source, --remove-source, --restore (one commit each, no model loaded) and --list-sources."""
    try:
        if args.list_sources:
            print_lines(source_lines(paths, load_database(paths).tracks))
        elif args.add_source:
            source = add_source(paths, args.add_source)
            print(f"source  {source['kind']}  {source['path']}")
            print("Run python music_to_vector.py to add its music (nothing in that "
                  f"{'server' if is_server_source(source) else 'folder'} is ever written).", file=sys.stderr)
        elif args.remove_source:
            source, count = remove_source(paths, args.remove_source)
            print(f"removed source  {source['path']}  ({count} tracks; no file touched)")
        else:
            for path in restore_tracks(paths, args.restore):
                print(f"restored  {path}")
            print("Run python music_to_vector.py to add them back.", file=sys.stderr)
    except (SourceError, UnknownTrackError, DatabaseError, LibraryBusyError, OSError, SubsonicError) as e:
        print(f"Error: {e.args[0] if isinstance(e, UnknownTrackError) else e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
