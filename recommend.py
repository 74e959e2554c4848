"""The command line of music_mood.recommendation's recommend() (and of --soundtrack), whose names it re-exports."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from contextlib import closing
from pathlib import Path

from music_mood.cli import (
    StopSignals,
    add_library_arguments,
    add_model_arguments,
    bpm_range,
    int_argument,
    loudness_argument,
    model_choice,
    new_parser,
    quiet_request_logs,
    seconds_argument,
    unit_interval,
)
from music_mood.database import Database, DatabaseError, EmptyLibraryError, UnknownTrackError, find_track
from music_mood.display import format_recommendation, format_soundtrack
from music_mood.images import ImageError
from music_mood.library import LibraryPaths, load_database
from music_mood.loudness import DEFAULT_LOUDNESS_LUFS, TRUE_PEAK_DBTP
from music_mood.models import ModelLoadError
from music_mood.player import play, play_bytes
from music_mood.playlists import PlaylistNameError
from music_mood.recommendation import NoQueryError, Recommendation, Track, recommend
from music_mood.remote import ServerConnections, is_server_track, song_file_name
from music_mood.saved_playlists import PlaylistError, check_can_save, save_playlist
from music_mood.search import BPM_RANGE_FORMS, DEFAULT_MAX_PER_ARTIST, Filters
from music_mood.soundtrack import (
    DEFAULT_SECONDS_PER_PHOTO,
    MAX_PHOTOS,
    MAX_SECONDS_PER_PHOTO,
    MAX_TOTAL_S,
    MIN_PHOTOS,
    OUTPUT_EXTENSIONS,
    NoReadablePhotosError,
    check_can_plan,
    check_lengths,
    plan_soundtrack,
)
from music_mood.subsonic import SubsonicError
from music_mood.timeline import with_mixed_audio

__all__ = [
    "EmptyLibraryError",
    "Filters",
    "NoQueryError",
    "Recommendation",
    "Track",
    "UnknownTrackError",
    "main",
    "recommend",
]


# ---------------------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser("recommend.py",
                        "Recommend music from your library that fits the mood of a photo (and/or a text), or "
                        "plan a soundtrack for a set of photos (--soundtrack).",
                        "python recommend.py beach.jpg --topk 5 --text 'sunset, slow' --play; "
                        "python recommend.py trip/*.jpg --soundtrack --out trip.mp4 --out trip.m3u8")
    parser.add_argument("images", nargs="*", metavar="IMAGE", help="photos to find music for")
    parser.add_argument("--text", default="", help="words to search by, alone or together with the photo")
    parser.add_argument("--topk", type=int_argument(1), default=10, help="how many tracks to list")
    parser.add_argument("--mood", action="append", help="only tracks of this mood (repeat for several)")
    parser.add_argument("--genre", action="append", help="only tracks of this genre (repeat for several)")
    parser.add_argument("--bpm", type=bpm_range, metavar="RANGE",
                        help=f"only tracks whose tempo is in this range, in beats per minute: "
                             f"{BPM_RANGE_FORMS.replace('%', '%%')}; a track without a known tempo never matches")
    parser.add_argument("--like", metavar="PATH_OR_ID",
                        help="more like this: rank by the stored vector of this library track (its file path or "
                             "id) instead of a photo or text; the track itself is left out")
    parser.add_argument("--max-per-artist", type=int_argument(0), default=DEFAULT_MAX_PER_ARTIST, metavar="N",
                        help="list at most N tracks of one artist, and of one album (0 = no cap; tracks without "
                             "an artist are not capped)")
    parser.add_argument("--diversity", type=unit_interval, default=0.0, metavar="LAMBDA",
                        help="MMR diversity from 0 to 1: trade closeness to the query for difference from the "
                             "tracks already listed (0 = the pure ranking)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per image, one per line")
    parser.add_argument("--play", action="store_true", help="play the top track from its best moment")
    parser.add_argument("--save-playlist", metavar="NAME",
                        help="also save the tracks as the playlist NAME, LIBRARY/playlists/NAME.m3u8 (an M3U8 that "
                             "players and music servers import; a Subsonic server's songs go to the playlist NAME "
                             "on their server), and say on stderr which tracks went where: with several "
                             "photos, one playlist of all their tracks in order, each once; with --soundtrack, the "
                             "soundtrack's tracks in play order (each once too). Saving NAME again replaces it; a "
                             "file of that name that this program did not save is never written over")
    slideshow = parser.add_argument_group(
        "soundtrack", f"music for a set of {MIN_PHOTOS} to {MAX_PHOTOS} photos, in the order given: scenes of "
                      "photos that belong together, a track for each (--text, --mood, --genre and --json apply; "
                      "--topk, --max-per-artist and --diversity do not)")
    slideshow.add_argument("--soundtrack", action="store_true",
                           help="plan a soundtrack for the photos (printed as a table, or JSON with --json)")
    lengths = slideshow.add_mutually_exclusive_group()
    lengths.add_argument("--seconds-per-photo", type=seconds_argument(MAX_SECONDS_PER_PHOTO), default=None,
                         metavar="S", help=f"how long each photo is shown, at most {MAX_SECONDS_PER_PHOTO:g} "
                                           f"(default: {DEFAULT_SECONDS_PER_PHOTO:g})")
    lengths.add_argument("--total-seconds", type=seconds_argument(MAX_TOTAL_S), default=None, metavar="S",
                         help=f"the soundtrack's length, spread evenly over the photos; a soundtrack lasts at most "
                              f"{MAX_TOTAL_S:g} s ({MAX_TOTAL_S / 60:g} minutes), however it is given")
    parser.set_defaults(beat_sync=True)  # SUPPRESS below: the help shows no "(default: True)" for a switch that is off
    slideshow.add_argument("--no-beat-sync", dest="beat_sync", action="store_false", default=argparse.SUPPRESS,
                           help="change photos by the clock, every --seconds-per-photo exactly, instead of on the "
                                "beat of the music (photos on beats, scenes on downbeats, music changing on a bar "
                                "line; README: Slideshows)")
    slideshow.add_argument("--loudness", type=loudness_argument, default=None, metavar="LUFS",
                           help=f"the --out audio's integrated loudness (ITU-R BS.1770), each piece brought to it, "
                                f"true peak at most {TRUE_PEAK_DBTP:g} dBTP (default: {DEFAULT_LOUDNESS_LUFS:g}, "
                                f"the streaming services' level)")
    slideshow.add_argument("--out", action="append", type=Path, metavar="FILE",
                           help=f"also write the soundtrack to FILE, by its extension: {', '.join(OUTPUT_EXTENSIONS)} "
                                "(repeat for several); a video editor's timeline (.otio, .xml, .edl) comes with the "
                                "mixed soundtrack beside it, as a .wav of the same name")
    add_library_arguments(parser)
    add_model_arguments(parser)
    return parser


def check_outputs(parser: argparse.ArgumentParser, outs: list[Path]) -> str | None:
    """The --out files: an unknown extension is a usage error (exit 2, by parser.error); the message for one
    whose folder is missing or cannot be written to, which the caller prints as an error (exit 1), or None.

    The folder is tried by creating and removing a temporary file in it: permission bits say nothing about a
    read-only mount, nor about root."""
    for out in outs:
        if out.suffix.lower() not in OUTPUT_EXTENSIONS:
            parser.error(f"--out {out}: unknown extension {out.suffix or '(none)'!r}; "
                         f"choose one of {', '.join(OUTPUT_EXTENSIONS)}")
    for out in outs:
        folder = out.parent
        if out.is_dir():
            return f"cannot write {out}: it is a folder"
        if not folder.exists():
            return f"cannot write {out}: the folder {folder} does not exist"
        if not folder.is_dir():
            return f"cannot write {out}: {folder} is not a folder"
        try:
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".music-mood-check-"):
                pass
        except OSError as e:
            return f"cannot write {out}: the folder {folder} is not writable ({e.strerror or e})"
    return None


def check_outside_library(db: Database, paths: LibraryPaths, outs: list[Path]) -> str | None:
    """The message for an --out that would change the library (a track's file, a database file, or a file in
    new_music/ or processed_music/, which the next build would take in as a track), or None. The same folders
    render.write_outputs refuses, checked here before any model work rather than after every photo is described."""
    if not outs:
        return None
    root = db.root.resolve()
    database_files = {p.resolve() for p in (*paths.data_files(), paths.metadata, paths.lock)}
    for out in outs:
        target = out.resolve()
        inside = target.relative_to(root).as_posix() if target.is_relative_to(root) else None
        if target in database_files or (inside is not None and db.row_of_file(inside) is not None):
            return f"cannot write {out}: it is a file of the music library in {paths.root}"
        if target.is_relative_to(paths.new_music.resolve()):
            return (f"cannot write {out}: {paths.new_music} is where the library takes in new music; "
                    f"choose another folder")
        if target.is_relative_to(paths.processed_music.resolve()):
            return (f"cannot write {out}: {paths.processed_music} holds the library's music (the next build would "
                    f"take in a new audio file there); choose another folder")
    return None


def soundtrack_main(parser: argparse.ArgumentParser, args, stop: StopSignals) -> int:
    """recommend.py --soundtrack: the plan on stdout, and the --out files.

    Exit status as for several photos without --soundtrack: 0 when every photo was used; 1 when a photo could
    not be read (it is named on stderr and left out; the plan and the files are still made from the others),
    when none could be, or on any other error; 2 for a usage error; 128 + the signal's number when stopped by
    SIGINT or SIGTERM (no --out file is written then, and no temporary file is left)."""
    if args.like is not None or args.play:
        parser.error("--soundtrack plans from photos: give it without --like and --play")
    if not MIN_PHOTOS <= len(args.images) <= MAX_PHOTOS:
        parser.error(f"--soundtrack needs {MIN_PHOTOS} to {MAX_PHOTOS} photos, not {len(args.images)}")
    seconds = args.seconds_per_photo or DEFAULT_SECONDS_PER_PHOTO
    try:
        check_lengths(len(args.images), seconds, args.total_seconds)  # photos × seconds, within the limit
    except ValueError as e:
        parser.error(str(e))
    outs = with_mixed_audio(args.out or [])  # and the .wav beside a timeline: checked as the others
    problem = check_outputs(parser, outs)  # before anything slow: a typo in a folder fails at once
    if problem:
        print(f"Error: {problem}", file=sys.stderr)
        return 1
    paths = LibraryPaths.at(args.library, args.vectors, args.meta)
    try:
        from music_mood.models import load_blip, load_clap_text

        db = load_database(paths, clap_model=args.clap_model)
        filters = Filters(args.mood, args.genre, args.bpm)
        check_can_plan(db, filters)  # before the models: loading them takes seconds
        problem = check_outside_library(db, paths, outs)
        if problem:
            print(f"Error: {problem}", file=sys.stderr)
            return 1
        write_outputs = None
        if outs:  # imported before the models load: an encoder that is not installed fails at once
            from music_mood.render import RenderCancelled, write_outputs
        choice = model_choice(args)
        clap = load_clap_text(args.clap_model, choice)
        blip = load_blip(args.blip_model, choice)
        plan = plan_soundtrack(blip, clap, db, args.images, seconds_per_photo=seconds, total_s=args.total_seconds,
                               text=args.text, filters=filters, progress=True, beat_sync=args.beat_sync)
        if args.loudness is not None:
            plan = dataclasses.replace(plan, loudness_lufs=args.loudness)
        for skipped in plan.skipped_photos:
            print(f"Warning: {skipped['error']}; left out", file=sys.stderr)
        if args.json:
            print(json.dumps(plan.to_dict(), ensure_ascii=False), flush=True)
        else:
            print(format_soundtrack(plan), flush=True)
        if write_outputs is not None:
            # should_stop as well as the KeyboardInterrupt: a stop whose exception Python swallowed (raised in a
            # __del__) still ends the render at its next step. A server's songs are fetched through one connection
            # per server for the run; its password may be asked for on the terminal.
            try:
                with closing(ServerConnections(interactive=True)) as servers:
                    write_outputs(plan, outs, progress=True, should_stop=lambda: stop.requested, servers=servers)
            except RenderCancelled:
                raise KeyboardInterrupt from None
        if save_tracks(db, [piece.file_path for scene in plan.scenes for piece in scene.pieces], args.save_playlist):
            return 1
    except KeyboardInterrupt:
        print("Interrupted: no --out file was written." if outs else "Interrupted.", file=sys.stderr)
        return stop.exit_status
    except (DatabaseError, ModelLoadError, NoReadablePhotosError, ImageError, PlaylistError, UnknownTrackError,
            RuntimeError, OSError) as e:
        print(f"Error: {e}", file=sys.stderr)  # ImageError: a photo that went away before rendering
        return 1
    return 1 if plan.skipped_photos else 0


def check_playlist_option(args) -> int | None:
    """--save-playlist NAME checked before any model loads: a name that cannot be a playlist's is one line and exit
    2 (a usage error, without the usage text), a file of that name the user made is one line and exit 1; None when
    the playlist can be saved. args.save_playlist becomes the checked name."""
    try:
        args.save_playlist = check_can_save(LibraryPaths.at(args.library).root, args.save_playlist)
    except PlaylistNameError as e:
        print(f"Error: --save-playlist: {e}", file=sys.stderr)
        return 2
    except PlaylistError as e:
        print(f"Error: --save-playlist: {e}", file=sys.stderr)
        return 1
    return None


def save_tracks(db: Database, tracks: list[str], name: str | None) -> int:
    """--save-playlist: `tracks` (file paths of the library, in order) saved as the playlist `name` (files in an
    M3U8, a server's songs on their server), and which went where said on stderr (stdout carries the results
    alone: a JSON reader gets nothing else). Returns 1 when a server failed (one line each; what could be saved
    was), else 0. No name: nothing."""
    if name is None:
        return 0
    with closing(ServerConnections(interactive=True)) as servers:
        saved = save_playlist(db, tracks, name, servers)
    print(saved.summary(), file=sys.stderr, flush=True)
    for problem in saved.problems():
        print(f"Error: {problem}", file=sys.stderr, flush=True)
    return 1 if saved.failed else 0


def play_top(db: Database, top: Track) -> None:
    """--play: the top track from its best moment. A server's song is downloaded into memory (no file written)
    and played through a player that reads a stream; where none is found here, a note says it plays in the app.
    Raises RuntimeError (no player, a failed one) or SubsonicError (the server would not give the song)."""
    row = db.row_of_file(top.file_path)
    track = db.tracks[row] if row is not None else {}
    if not is_server_track(track):
        play(str(db.root / top.file_path), top.best_segment_start_s)
        return
    servers = ServerConnections(interactive=True)  # a terminal may be asked for the password
    try:
        audio = servers.song_audio(track)
    finally:
        servers.close()
    if not play_bytes(audio.data, song_file_name(track), top.best_segment_start_s):
        print(f"Note: {song_file_name(track)} is on a music server and no player here reads a stream (install mpv "
              f"or ffmpeg); it plays in the app (python app.py).", file=sys.stderr)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet_request_logs()
    if args.save_playlist is not None:
        refused = check_playlist_option(args)
        if refused is not None:
            return refused
    with StopSignals() as stop:  # SIGTERM stops as Ctrl-C does, cleaning up after itself
        if args.soundtrack:
            return soundtrack_main(parser, args, stop)
        return recommend_main(parser, args, stop)


def recommend_main(parser: argparse.ArgumentParser, args, stop: StopSignals) -> int:
    """recommend.py without --soundtrack: the recommendations on stdout (0; 1 on an error, 2 for a usage error,
    128 + the signal's number when stopped by SIGINT or SIGTERM)."""
    if args.seconds_per_photo is not None or args.total_seconds is not None or args.out \
            or args.loudness is not None or not args.beat_sync:
        parser.error("--seconds-per-photo, --total-seconds, --no-beat-sync, --loudness and --out go with "
                     "--soundtrack")
    if args.like is not None and (args.images or args.text.strip()):
        parser.error("--like is the query on its own: give it without IMAGE or --text")
    if args.like is None and not args.images and not args.text.strip():
        parser.error("give at least one IMAGE, --text, or --like")
    paths = LibraryPaths.at(args.library, args.vectors, args.meta)
    status = 0
    try:
        from music_mood.models import load_blip, load_clap_text

        db = load_database(paths, clap_model=args.clap_model)
        filters = Filters(args.mood, args.genre, args.bpm)
        filters.check(db)  # before the models: loading them takes seconds
        if args.like is not None:
            find_track(db, args.like)  # an unknown track fails here, before any model work
        # "More like this" needs no model (the query is a vector the library already holds), nor a model choice.
        clap = blip = None
        if args.like is None:
            choice = model_choice(args)
            clap = load_clap_text(args.clap_model, choice)
            blip = load_blip(args.blip_model, choice) if args.images else None
        first, warned, listed = None, set(), []
        for image in args.images or [None]:
            try:
                rec = recommend(blip, clap, db, image=image, text=args.text, topk=args.topk, filters=filters,
                                max_per_artist=args.max_per_artist, diversity=args.diversity, like=args.like)
            except ImageError as e:
                print(f"Error: {e}", file=sys.stderr)
                status = 1
                continue
            first = first or rec
            listed += [track.file_path for track in rec.results]
            for path in rec.skipped_missing:
                if path not in warned:
                    warned.add(path)
                    print(f"Warning: {db.root / path} is in the library but its file is missing; skipped "
                          f"(run python music_to_vector.py to update the library)", file=sys.stderr)
            if args.json:
                print(json.dumps({"image": image, **rec.to_dict()}, ensure_ascii=False), flush=True)
            else:
                print(format_recommendation(image or "", rec) + "\n", flush=True)
        status = save_tracks(db, listed, args.save_playlist) or status  # the tracks of the photos read
        if args.play and first is not None:
            play_top(db, first.results[0])
    except (DatabaseError, ModelLoadError, UnknownTrackError, PlaylistError, RuntimeError, OSError,
            SubsonicError) as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return stop.exit_status
    return status


if __name__ == "__main__":
    raise SystemExit(main())
