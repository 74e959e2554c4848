"""The web page: a Gradio UI around recommend(), the soundtrack planner and renderer, and the library builder; it
serves only the library's audio files and what it rendered for a visitor."""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import functools
import html
import inspect
import json
import mimetypes
import os
import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from music_mood.audio import AUDIO_EXTENSIONS
from music_mood.build import build_library, pending_files
from music_mood.cli import StopSignals, add_library_arguments, add_model_arguments, int_argument, new_parser
from music_mood.database import EMPTY_LIBRARY, Database, DatabaseError, EmptyLibraryError, UnknownTrackError, find_track
from music_mood.display import TAG_COLUMNS, format_bpm, format_duration, track_tags
from music_mood.edit import EDITABLE_FIELDS, REMOVED_FOLDER, FieldValueError, field_value, remove_tracks, set_fields
from music_mood.images import ImageError
from music_mood.library import LibraryPaths
from music_mood.live import LiveLibrary
from music_mood.models import (
    BackgroundModels,
    ModelLoadError,
    freeze_loaded_objects,
    load_clap_audio,
    load_clap_text,
    release_freed_memory,
)
from music_mood.recommendation import NoQueryError, recommend
from music_mood.render import RenderError
from music_mood.sample import SAMPLE_PACKAGE, import_sample_library
from music_mood.search import BPM_RANGE_FORMS, DEFAULT_MAX_PER_ARTIST, BpmRange, Filters, parse_bpm_range, tag_values
from music_mood.serve import (
    RenderFolders,
    port_busy_message,
    port_in_use,
    render_routes,
    track_routes,
    track_url,
)
from music_mood.slideshows import (
    SLIDESHOW_FILES,
    Slideshow,
    make_slideshow,
    next_best_slideshow,
    skipped_photos,
    slideshow_answer,
)
from music_mood.soundtrack import (
    DEFAULT_SECONDS_PER_PHOTO,
    MAX_PHOTOS,
    MAX_SECONDS_PER_PHOTO,
    MIN_PHOTOS,
    NoOtherTrackError,
)
from music_mood.storage import LibraryBusyError
from music_mood.tags import tagger_of
from music_mood.uploads import NotUploadedError, add_uploads, uploaded_file

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
MAX_UPLOAD = "200mb"
QUEUE_SIZE = 16  # waiting requests beyond this are refused at once rather than left to time out
UPLOAD_KEEP_S = 3600  # a photo can be asked about again for an hour; then Gradio removes it (checked every 10 min)
UPLOAD_SWEEP_S = 600
STOP_POLL_S = 0.2  # how often the main thread looks for a stop request (SIGINT, SIGTERM) while serving
TOPK_MAX = 20
EXAMPLES = Path(__file__).resolve().parent / "examples"
EXAMPLE_PHOTOS = ("chelsea.png", "coffee.png", "rocket.jpg", "astronaut.png")
LIBRARY_COLUMNS = ["#", *(key for key, _ in TAG_COLUMNS), "bpm", "length", "file"]
FILE_COLUMN = LIBRARY_COLUMNS.index("file")  # what names a row's track when one of its cells is edited
LIBRARY_TABLE_MAX_ROWS = 5_000  # a browser table of a whole catalogue would freeze the page
AUTO_MARK = " (auto)"  # how the table shows a track's best automatic tag where it has no mood/genre of its own
# A correction or removal waits this long for a builder holding the library lock (an upload, music_to_vector.py),
# then says the library is busy: the page's request should not hang for the length of a build.
EDIT_WAIT_S = 30

# The Slideshow tab: at most this many photos per soundtrack (the CLI takes MAX_PHOTOS): describing them takes about
# a second each, rendering their video a few seconds more, and a request holds the models all that time.
MAX_SLIDESHOW_PHOTOS = 60
# The page's seconds per photo, up to the core's limit; a set longer than soundtrack.MAX_TOTAL_S is refused by the
# core (plan_soundtrack), one message, as for the CLI.
SLIDESHOW_SECONDS = (1.0, MAX_SECONDS_PER_PHOTO)

# The track route sends the type mimetypes guesses; without /etc/mime.types Python knows no .opus or .m4a, and
# the browser would get application/octet-stream.
mimetypes.add_type("audio/ogg", ".opus")
mimetypes.add_type("audio/mp4", ".m4a")
mimetypes.add_type("audio/flac", ".flac")

CSS = """
.tracks { list-style: none; padding: 0; margin: 0; }
.track { padding: 0.6em 0; border-bottom: 1px solid var(--border-color-primary); }
.track .rank { display: inline-block; min-width: 1.8em; font-weight: bold; }
.track .meta { font-size: 0.9em; opacity: 0.8; margin: 0.2em 0 0.4em 1.8em; }
.track audio { width: calc(100% - 1.8em); margin-left: 1.8em; }
.track .more-like { margin-left: 0.6em; font-size: 0.85em; cursor: pointer; }
.slideshow video { width: 100%; max-height: 480px; background: black; }
.slideshow .mix { display: flex; align-items: center; gap: 0.8em; margin: 0.4em 0; }
.slideshow .mix audio { flex: 1; }
.slideshow .downloads a { margin-right: 0.9em; }
.slideshow .note { font-size: 0.9em; opacity: 0.85; }
.scenes { list-style: none; padding: 0; margin: 0.6em 0 0 0; }
.scene { padding: 0.7em 0; border-top: 1px solid var(--border-color-primary); }
.scene .next-best { margin-left: 0.6em; font-size: 0.85em; cursor: pointer; }
.scene .thumbs { display: flex; flex-wrap: wrap; gap: 0.5em; margin: 0.5em 0; }
.scene figure { margin: 0; width: 120px; font-size: 0.75em; }
.scene figure img { width: 120px; height: 80px; object-fit: contain; background: black; display: block; }
.scene figcaption { display: -webkit-box; -webkit-line-clamp: 3; -webkit-box-orient: vertical; overflow: hidden; }
.scene .piece { margin: 0.3em 0; }
.scene .piece audio { width: 100%; }
.scene .why { font-size: 0.9em; opacity: 0.85; }
"""
# A result's "More like this" button puts its file_path into the hidden #like box and presses the hidden
# #more-like-this button, so the page asks /more_like_this as an API client would.
ASK_MORE_LIKE_THIS = """
element.addEventListener('click', (event) => {
  const button = event.target.closest('button.more-like');
  if (!button) return;
  const box = document.querySelector('#like textarea');
  box.value = button.dataset.file;
  box.dispatchEvent(new Event('input', {bubbles: true}));
  document.querySelector('#more-like-this').click();
});
"""


# A scene's "Next-best track" button puts its index into the hidden #next-scene box and presses the hidden
# #next-best button, so the page asks /next_best_track as an API client would.
ASK_NEXT_BEST = """
element.addEventListener('click', (event) => {
  const button = event.target.closest('button.next-best');
  if (!button) return;
  const box = document.querySelector('#next-scene input');
  box.value = button.dataset.scene;
  box.dispatchEvent(new Event('input', {bubbles: true}));
  document.querySelector('#next-best').click();
});
"""
# The slideshow's photos in file-name order, numbers compared as numbers (IMG_2 before IMG_10): run in the browser
# when photos are added and by the "Sort by file name" button; dragging a file in the list reorders it afterwards.
# The list is returned inside a list: Gradio reads a JavaScript function's array as one value per output.
SORT_BY_NAME = """
(files) => [files && [...files].sort((a, b) => (a.orig_name || a.path).localeCompare(
  b.orig_name || b.path, undefined, {numeric: true, sensitivity: 'base'}))]
"""


# ---------------------------------------------------------------------------------------------- rendering


def audio_url(file_path: str, start_s: float | None = None) -> str:
    """The URL the page plays a track from, by its file_path; `#t=` makes the browser start at `start_s` seconds."""
    url = track_url(file_path)
    return url if start_s is None else f"{url}#t={start_s:g}"


def render_tracks(result: dict) -> str:
    """The ranked tracks as HTML, each with its own player starting at its best moment; all text escaped."""
    results = result.get("results") or []
    if not results:
        return "<p>No recommendations yet: drop in a photo (or type some words and press Recommend).</p>"
    items = []
    for track in results:
        start = track.get("best_segment_start_s")
        url = track["audio_url"] + ("" if start is None else f"#t={start:g}")
        best = "" if start is None else f" · best moment {format_duration(start)}"
        by = f" — {html.escape(track['artist'])}" if track.get("artist") else ""
        shared = track.get("shared_mood_words") or []
        _, _, mood, genre = track_tags(track)  # the user's own tags, else the best automatic one "(auto)"
        shares = f" · shares: {html.escape(', '.join(shared))}" if shared else ""
        tempo = f" · {format_bpm(track.get('bpm'))}" if track.get("bpm") is not None else ""
        # The top track downloads at once so it plays without a wait; the others fetch only their length.
        preload = "auto" if track["rank"] == 1 else "metadata"
        items.append(
            f'<li class="track" data-rank="{track["rank"]}" data-file="{html.escape(track["file_path"])}" '
            f'data-best-start="{"" if start is None else f"{start:g}"}">'
            f'<span class="rank">{track["rank"]}.</span><b class="title">{html.escape(track["title"])}</b>{by}'
            f'<button class="more-like" data-file="{html.escape(track["file_path"])}">More like this</button>'
            f'<div class="meta">mood: {html.escape(mood or "–")} · genre: {html.escape(genre or "–")}{tempo} · '
            f'score {track["score"]:.3f}{best}{shares}</div>'
            f'<audio controls preload="{preload}" src="{html.escape(url)}"></audio></li>'
        )
    return f'<ol class="tracks">{"".join(items)}</ol>'


def render_analysis(result: dict) -> tuple[str, str, str, str]:
    """caption, mood words, query text and the tracks' HTML, for the page's output components."""
    return (result.get("caption", ""), ", ".join(result.get("mood_words", [])), result.get("query_text", ""),
            render_tracks(result))


def library_rows(db: Database) -> list[list]:
    """The Library tab's table: number, the tag columns, tempo, length and file of every track (of the first
    LIBRARY_TABLE_MAX_ROWS: a catalogue is browsed with python music_to_vector.py --list)."""
    return [[i, *track_tags(t), format_bpm(t.get("bpm"), unit=""), format_duration(float(t.get("duration_s", 0) or 0)),
             str(t["file_path"])] for i, t in enumerate(db.tracks[:LIBRARY_TABLE_MAX_ROWS], 1)]


def library_table_note(tracks: int) -> str:
    """What the Library tab says above its table of a library of `tracks` tracks: how to edit, and how many of the
    tracks it shows."""
    note = ("Correct a track's title, artist, mood or genre in the table: double-click the cell, type, press Enter "
            "(kept by `python music_to_vector.py --rebuild`).")
    if tracks > LIBRARY_TABLE_MAX_ROWS:
        note += (f" The table shows the first {LIBRARY_TABLE_MAX_ROWS:,} of the {tracks:,} tracks; "
                 f"`python music_to_vector.py --list` lists them all, and a track id typed below removes any of them.")
    return note


def render_slideshow(answer: dict | None) -> str:
    """A /soundtrack answer as HTML: the slideshow's video, the mixed soundtrack's player, the download links, then
    each scene with its photos' thumbnails, its music (a player per piece, playing just the stretch the
    soundtrack uses), why it was picked and its "Next-best track" button. All text escaped."""
    if not answer or not answer.get("scenes"):
        return ("<p>No soundtrack yet: drop in photos, choose how long each is shown, and press "
                "“Make the soundtrack”.</p>")
    files = {kind: html.escape(url) for kind, url in answer["files"].items()}
    photos = answer["photos"]
    links = " ".join(f'<a class="download" data-kind="{kind}" href="{files[kind]}" download="{SLIDESHOW_FILES[kind]}">'
                     f"{label}</a>" for kind, label in (("mp4", "Video (MP4)"), ("m4a", "Soundtrack (M4A)"),
                                                       ("m3u8", "Playlist (M3U8)"), ("json", "Plan (JSON)")))
    notes = []
    if answer.get("tracks_repeat"):
        notes.append("The library has fewer tracks than this soundtrack needs: some tracks play twice.")
    skipped = answer.get("skipped_photos") or []
    if skipped:
        notes.append(f"Left out, unreadable: {html.escape(', '.join(s['name'] for s in skipped))}.")
    scenes = []
    for scene in answer["scenes"]:
        members = scene["photos"]
        thumbs = "".join(
            f'<figure><img src="{html.escape(photos[i]["thumbnail_url"])}" alt="{html.escape(photos[i]["name"])}" '
            f'title="{html.escape(photos[i]["name"])}" loading="lazy"><figcaption title="'
            f'{html.escape(photos[i]["caption"])}">{i + 1}. {html.escape(photos[i]["caption"] or photos[i]["name"])}'
            f'</figcaption></figure>' for i in members)
        pieces = []
        for k, piece in enumerate(scene["pieces"]):
            by = f" — {html.escape(piece['artist'])}" if piece.get("artist") else ""
            then = "then " if k else ""
            stretch = f"#t={piece['track_start_s']:.2f},{piece['track_end_s']:.2f}"
            pieces.append(
                f'<div class="piece" data-file="{html.escape(piece["file_path"])}">{then}<b class="title">'
                f'{html.escape(piece["title"] or piece["file_path"])}</b>{by} · '
                f'{format_duration(piece["track_start_s"])}–{format_duration(piece["track_end_s"])} of the track · '
                f'score {piece["score"]:.3f}'
                f'<audio controls preload="none" src="{html.escape(piece["audio_url"] + stretch)}"></audio></div>')
        why = [f"these photos read as {html.escape(', '.join(scene['mood_words']) or '–')}"]
        if scene.get("shared_mood_words"):
            why.append(f"the track is tagged {html.escape(', '.join(scene['shared_mood_words']))}")
        query = f"<details><summary>The query (what CLAP matched)</summary>{html.escape(scene['query_text'])}</details>"
        span = f"photo {members[0] + 1}" if len(members) == 1 else f"photos {members[0] + 1}–{members[-1] + 1}"
        scenes.append(
            f'<li class="scene" data-scene="{scene["index"]}"><b>Scene {scene["index"] + 1}</b> · '
            f'{format_duration(scene["start_s"])}–{format_duration(scene["end_s"])} · {span}'
            f'<button class="next-best" data-scene="{scene["index"]}">Next-best track</button>'
            f'<div class="thumbs">{thumbs}</div>{"".join(pieces)}<div class="why">Why: {"; ".join(why)}.{query}</div>'
            f'</li>')
    return (f'<div class="slideshow"><video controls preload="metadata" src="{files["mp4"]}"></video>'
            f'<div class="mix"><span>Soundtrack</span><audio controls preload="metadata" src="{files["m4a"]}">'
            f'</audio></div><div class="downloads">Download: {links}</div>'
            + "".join(f'<p class="note">{note}</p>' for note in notes)
            + f'<ol class="scenes">{"".join(scenes)}</ol></div>')


# ---------------------------------------------------------------------------------------------- handlers


def tempo_filter(bpm: str | None) -> BpmRange | None:
    """The page's tempo box ("80-110", "80-", "-110", "120"; empty: no filter) as a filter for recommend();
    gr.Error saying what it takes when it does not read as a range."""
    import gradio as gr

    if bpm is None or not str(bpm).strip():
        return None
    try:
        return parse_bpm_range(bpm)
    except ValueError as e:
        raise gr.Error(f"Tempo: {e}.") from e


def recommend_photo(library: LiveLibrary, blip, clap, image, text: str = "", topk: int = 10, moods=None,
                    genres=None, max_per_artist: int = DEFAULT_MAX_PER_ARTIST, diversity: float = 0.0,
                    bpm: str = "") -> dict:
    """The /recommend endpoint: Recommendation.to_dict() plus each track's audio_url on this server; `bpm` is the
    tempo box's text (tempo_filter).

    `max_per_artist` (0: no cap) and `diversity` (MMR, 0..1) are recommend()'s variety options, checked by the
    page's sliders before this runs.

    Raises gr.Error with a message for the user for anything the user can fix; the server keeps serving. A track
    left out because its file is gone is named in a warning too, as the CLI does.
    """
    import gradio as gr

    tempo = tempo_filter(bpm)
    try:
        db = library.current()  # one version of the library for the whole request
        rec = recommend(blip, clap, db, image=image, text=text, topk=int(topk), filters=Filters(moods, genres, tempo),
                        max_per_artist=int(max_per_artist), diversity=float(diversity))
    except ImageError as e:
        # The message names the upload's temporary path on the server; the user knows it by its file name.
        message = str(e).replace(str(image), Path(str(image)).name) if isinstance(image, str) else str(e)
        raise gr.Error(f"That file is not a photo we can read: {message}.") from e
    except NoQueryError as e:
        raise gr.Error("Upload a photo (or type some words) first.") from e
    except EmptyLibraryError as e:
        raise gr.Error(str(e)) from e
    except DatabaseError as e:
        raise gr.Error(f"The music database cannot be used: {e}") from e
    return _answer(rec)


def _answer(rec) -> dict:
    """A Recommendation as the API answers it: its dict, each track with its player's URL; a track whose file is
    missing is named in a warning."""
    import gradio as gr

    for path in rec.skipped_missing:
        gr.Warning(f"{path} is in the library but its file is missing; left out of the results.")
    result = rec.to_dict()
    for track in result["results"]:
        track["audio_url"] = audio_url(track["file_path"])
    return result


def recommend_like(library: LiveLibrary, like: str, topk: int = 10, moods=None, genres=None,
                   max_per_artist: int = DEFAULT_MAX_PER_ARTIST, diversity: float = 0.0, bpm: str = "") -> dict:
    """The /more_like_this endpoint: recommend(like=...) on the current library, shaped as /recommend's answer.

    `like` is a track's file_path (as in a result) or id; it needs no model, so it answers while they load. The
    variety options are /recommend's.
    """
    import gradio as gr

    tempo = tempo_filter(bpm)
    try:
        db = library.current()
        rec = recommend(None, None, db, topk=int(topk), filters=Filters(moods, genres, tempo), like=like,
                        max_per_artist=int(max_per_artist), diversity=float(diversity))
    except UnknownTrackError as e:
        raise gr.Error(str(e)) from e
    except EmptyLibraryError as e:
        raise gr.Error(str(e)) from e
    except DatabaseError as e:
        raise gr.Error(f"The music database cannot be used: {e}") from e
    return _answer(rec)


def slideshow_photos(files) -> list[str]:
    """The photos of a /soundtrack request, in the order given; gr.Error unless there are MIN_PHOTOS to
    MAX_SLIDESHOW_PHOTOS of them (checked before any model work)."""
    import gradio as gr

    photos = [str(file) for file in files or []]
    if len(photos) < MIN_PHOTOS:
        raise gr.Error(f"Drop in {MIN_PHOTOS} to {MAX_SLIDESHOW_PHOTOS} photos first (a soundtrack is for a set; "
                       f"for one photo, use the Recommend tab).")
    if len(photos) > MAX_SLIDESHOW_PHOTOS:
        raise gr.Error(f"At most {MAX_SLIDESHOW_PHOTOS} photos make one soundtrack here, not {len(photos)}: split "
                       f"the set, or use python recommend.py --soundtrack, which takes up to {MAX_PHOTOS}.")
    return photos


@contextlib.contextmanager
def slideshow_errors(photos=()):
    """The core's errors while making a soundtrack, as gr.Error messages for the user; an upload is named by its
    file name, not by its temporary path on the server."""
    import gradio as gr

    names = {str(photo): Path(str(photo)).name for photo in photos}

    def said(error: Exception) -> str:
        message = str(error)
        for path, name in names.items():
            message = message.replace(path, name)
        return message[:1].upper() + message[1:].rstrip(".") + "."

    try:
        yield
    except NoOtherTrackError as e:  # a LookupError, as IndexError is
        raise gr.Error(f"{said(e)} Plan the soundtrack again, or add music in the Library tab.") from e
    except (ValueError, IndexError) as e:  # no photo readable, how many, how long, a scene there is not
        raise gr.Error(said(e)) from e
    except EmptyLibraryError as e:
        raise gr.Error(said(e)) from e
    except DatabaseError as e:
        raise gr.Error(f"The music database cannot be used: {e}") from e
    except RenderError as e:
        raise gr.Error(f"The soundtrack could not be rendered: {said(e)}") from e
    except ModelLoadError as e:
        raise gr.Error(str(e)) from e


async def run_until_cancelled(work, *args):
    """work(should_stop, *args) in a worker thread, its result or its exception; the caller's context (Gradio's
    progress, warnings) goes with it.

    Gradio cancels an event (the page's Cancel, gradio_client's job.cancel()) by cancelling the asyncio task that
    awaits its function; a thread cannot be interrupted, so a plain function would run on to its end. Here the
    cancel makes should_stop() answer True, and it completes only once the worker has stopped and removed what
    it had made (at the next model call or rendering step: well under a second).
    """
    stop = threading.Event()
    future = asyncio.get_running_loop().run_in_executor(None, contextvars.copy_context().run, work, stop.is_set,
                                                        *args)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        stop.set()
        while not future.done():
            with contextlib.suppress(asyncio.CancelledError):  # a second cancel: still wait for the cleanup
                await asyncio.wait([future])
        if not future.cancelled():
            future.exception()  # retrieved: it is ModelStopped or RenderCancelled, which the cancel explains
        raise


def progress_reporter(progress):
    """write_outputs' on_progress(fraction, text) shown through the page's gr.Progress, from any thread or context
    (render runs outside the page's context, see render_slideshow_files)."""
    context = contextvars.copy_context()
    return lambda fraction, text: context.run(progress, fraction, desc=text)


def correct_track(library: LiveLibrary, track: str, fields: dict) -> dict:
    """The /set_track_fields endpoint: set tags ({"mood": "calm", "title": ...}: title, artist, mood, genre) of the
    track named by `track` (its file_path or id), each value stripped and checked (edit.field_value: one line of
    text, of bounded length). One commit under the library lock
    (edit.set_fields); the vectors stay, and --rebuild keeps the corrections. Values equal to the stored ones
    commit nothing.

    Returns {"id", "file_path", "title", "artist", "genre", "mood"} of the track after the change. An unknown
    track or field is a gr.Error, and nothing is changed.
    """
    import gradio as gr

    if not isinstance(fields, dict) or not fields:
        raise gr.Error(f"Say which fields to set, e.g. {{\"mood\": \"calm\"}} (a track's editable fields are "
                       f"{', '.join(EDITABLE_FIELDS)}); nothing was changed.")
    unknown = [name for name in fields if name not in EDITABLE_FIELDS]
    if unknown:
        raise gr.Error(f"{unknown[0]!r} cannot be set: a track's editable fields are {', '.join(EDITABLE_FIELDS)}; "
                       f"nothing was changed.")
    try:
        values = {name: field_value(name, value) for name, value in fields.items()}
    except FieldValueError as e:
        raise gr.Error(f"{str(e)[:1].upper()}{str(e)[1:]}; nothing was changed.") from e
    db = _current(library)
    try:
        record = db.tracks[find_track(db, track)]
        edits = [(track, name, value) for name, value in values.items()]
        edits = [edit for edit in edits if str(record.get(edit[1], "") or "") != edit[2]]
        if edits:
            done, problems = set_fields(library.paths, edits, lock_timeout=EDIT_WAIT_S)
            record = done[-1][0]
            for problem in problems:
                gr.Warning(problem)
    except UnknownTrackError as e:
        raise gr.Error(_nothing_changed(e)) from e
    except (DatabaseError, LibraryBusyError, OSError) as e:
        raise gr.Error(f"{e}; nothing was changed.") from e
    return {key: str(record.get(key, "") or "") for key in ("id", "file_path", *EDITABLE_FIELDS)}


def track_keys(tracks) -> list[str]:
    """The tracks a request names, each stripped, blanks left out: a list of them, or one as a plain string (which
    would otherwise be taken letter by letter)."""
    if isinstance(tracks, str):
        tracks = [tracks]
    return [str(key).strip() for key in tracks or [] if str(key).strip()]


def remove_from_library(library: LiveLibrary, tracks: list[str]) -> dict:
    """The /remove_tracks endpoint: take the tracks named by `tracks` (file paths or ids, or one as a string) out of
    the library.

    Their rows, their windows and the move of their files to removed/ in the library folder are one commit
    (edit.remove_tracks); nothing is deleted. Every name must be a track of the library, else nothing changes
    (gr.Error). Returns {"removed": [{"file_path", "moved_to"}], "tracks": how many are left}: moved_to is
    relative to the library folder, None for a file that was already gone.
    """
    import gradio as gr

    keys = track_keys(tracks)
    if not keys:
        raise gr.Error("Choose the tracks to remove first.")
    try:
        removed, problems = remove_tracks(library.paths, keys, lock_timeout=EDIT_WAIT_S)
    except UnknownTrackError as e:
        raise gr.Error(_nothing_changed(e)) from e
    except (DatabaseError, LibraryBusyError, OSError) as e:
        raise gr.Error(f"{e}; nothing was changed.") from e
    for problem in problems:
        gr.Warning(problem)
    root = library.paths.root
    return {"removed": [{"file_path": record["file_path"],
                         "moved_to": target.relative_to(root).as_posix() if target else None}
                        for record, target in removed],
            "tracks": len(_current(library))}


def edit_cell(library: LiveLibrary, table: list[list], index, value) -> str:
    """A cell of the Library table edited in the page: row index[0] of `table` (the table as the page showed it,
    whose file column names the track), column index[1]. Commits it through correct_track; returns the status line.

    The "(auto)" mark of an automatic tag is the table's, not part of a word: "calm (auto)" sets "calm".
    """
    import gradio as gr

    row, column = index
    field = LIBRARY_COLUMNS[column] if 0 <= column < len(LIBRARY_COLUMNS) else "?"
    if field not in EDITABLE_FIELDS:
        raise gr.Error(f"The {field} column cannot be changed here: only a track's "
                       f"{', '.join(name for name in LIBRARY_COLUMNS if name in EDITABLE_FIELDS)}.")
    try:
        file_path = str(table[row][FILE_COLUMN] or "").strip()  # a row the user added has none
    except (IndexError, TypeError):
        file_path = ""
    if not file_path:
        raise gr.Error("That row is no track of the library: add music with the upload above.")
    if _current(library).row_of_file(file_path) is None:
        raise gr.Error(f"{file_path} is no longer in the library (removed or moved meanwhile); the table now shows "
                       f"the library as it is.")
    value = str(value or "").strip().removesuffix(AUTO_MARK.strip()).strip()
    record = correct_track(library, file_path, {field: value})
    return f"Set the {field} of {_markdown_text(record['file_path'])} to “{_markdown_text(record[field])}”."


class EditEchoes:
    """The refused edits of the Library table whose echo is still to come, one per page (Gradio session).

    Gradio 6.31's Dataframe sends an edit ended with Enter twice, at once and alike (the same table, cell and
    value): once from the key, once as the cell's editor closes. The second is the same request again; it runs
    after the first (one edit at a time) and is answered with nothing when the first was refused, rather than with
    the same error a second time. An echo of a committed edit needs nothing: its value is stored, it commits
    nothing. Any edit a page sends next uses up that page's record, so only the very next one can be an echo.
    """

    KEEP = 64  # pages whose echo never came (an edit ended by a click elsewhere is sent once)

    def __init__(self):
        self._waiting: dict[str, str] = {}
        self._lock = threading.Lock()

    def refused(self, session: str, edit: str) -> None:
        with self._lock:
            self._waiting.pop(session, None)
            self._waiting[session] = edit
            while len(self._waiting) > self.KEEP:
                del self._waiting[next(iter(self._waiting))]

    def is_echo(self, session: str, edit: str) -> bool:
        with self._lock:
            return self._waiting.pop(session, None) == edit


def removal_question(library: LiveLibrary, tracks: list[str]) -> str:
    """What the page asks before removing `tracks` (as Markdown): which tracks, and where their files will go.
    A name that is no track is a gr.Error at once, before anything is asked."""
    import gradio as gr

    keys = track_keys(tracks)
    if not keys:
        raise gr.Error("Choose the tracks to remove first.")
    db = _current(library)
    try:
        rows = sorted({find_track(db, key) for key in keys})
    except UnknownTrackError as e:
        raise gr.Error(_nothing_changed(e)) from e
    lines = [f"- {_markdown_text(db.tracks[i].get('title') or '')} — {_markdown_text(db.tracks[i]['file_path'])}"
             for i in rows]
    return (f"**Remove {len(rows)} track(s) from the library?**\n\n" + "\n".join(lines) +
            f"\n\nTheir files move to `{REMOVED_FOLDER}/` in the library folder; nothing is deleted (to add a track "
            f"back, move its file into `new_music/`).")


def removal_status(answer: dict) -> str:
    """The Library tab's status after a removal, as Markdown: where each file went."""
    moved = [f"- {_markdown_text(item['file_path'])} → "
             f"{_markdown_text(item['moved_to']) if item['moved_to'] else 'its file was already gone'}"
             for item in answer["removed"]]
    return (f"Removed {len(answer['removed'])} track(s); their files are in `{REMOVED_FOLDER}/` in the library "
            f"folder. The library holds {answer['tracks']} track(s).\n\n" + "\n".join(moved))


def removal_choices(rows: list[list]) -> list[tuple[str, str]]:
    """The tracks the removal list offers, from the Library table's rows: ("title — file", file)."""
    title = LIBRARY_COLUMNS.index("title")
    return [(f"{row[title]} — {row[FILE_COLUMN]}", str(row[FILE_COLUMN])) for row in rows or [] if row[FILE_COLUMN]]


def _current(library: LiveLibrary) -> Database:
    import gradio as gr

    try:
        return library.current()
    except DatabaseError as e:
        raise gr.Error(f"The music database cannot be used: {e}") from e


def _nothing_changed(error: UnknownTrackError) -> str:
    message = str(error.args[0])
    return message if message.endswith("nothing was changed") else f"{message}; nothing was changed"


def upload_status(result: dict, problems: list[str], tracks: int) -> str:
    """The Library tab's status after an upload, as Markdown: the counts, then every file not added and why,
    so the /add_music reply carries the reasons and not only the page's warnings."""
    skipped = f"; {result['not_added']} not added" if result["not_added"] else ""
    status = f"Added {len(result['added'])} track(s){skipped}; the library holds {tracks}."
    if problems:
        status += "\n\n" + "\n".join(f"- {_markdown_text(problem)}" for problem in problems)
    return status


def _markdown_text(text: str) -> str:
    """`text` shown as written in Markdown: a file name may hold *, _, [ or <."""
    return re.sub(r"([\\`*_\[\]<>#|~])", r"\\\1", text)


def unreadable_photo_message(name: str, error: Exception) -> str:
    """What the page says about an upload Pillow could not open: why, in words, never an exception's class."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(error, FileNotFoundError):
        return f"{name} is no longer on the server (uploads are kept for an hour); drop the photo in again."
    if isinstance(error, UnidentifiedImageError):
        why = "its format is not one of the picture formats we know"
    elif isinstance(error, Image.DecompressionBombError):
        why = "it has too many pixels to open safely"
    else:
        why = "it is damaged or cut short"
    return f"{name} is not an image we can read: {why}. Upload a JPEG, PNG, WebP or similar photo."


def upload_paths(payload) -> list[str]:
    """The uploads component's preprocess: the uploaded files' paths, for add_music to check and copy.

    Gradio's own makes an empty temporary file per upload that nothing removes, and refuses a file of another
    type with an error where add_music names that file among the others instead.
    """
    if payload is None:
        return []
    return [file.path for file in getattr(payload, "root", [payload])]  # ListFiles, or one FileData


def discard_uploads(files, upload_dir: Path, keep: set[str]) -> None:
    """Remove uploaded files the page no longer needs, and the folder Gradio made for each once it is empty.

    Only files inside Gradio's upload folder are touched, and never one in `keep`: Gradio's copy of an example
    photo is the very file an upload of the same photo lands in.
    """
    upload_dir = upload_dir.resolve()
    for file in files:
        path = Path(file)
        if str(path) in keep or not path.resolve().is_relative_to(upload_dir):
            continue
        path.unlink(missing_ok=True)
        if path.parent.resolve() != upload_dir:
            try:
                path.parent.rmdir()
            except OSError:  # another upload with the same content is still in it
                pass


def refuse_foreign_files(demo) -> None:
    """Make every event of `demo` take only files inside its upload folder (uploads.uploaded_file): one check on the
    raw request, before Gradio reads, copies or preprocesses any of it, for every endpoint present or added later.
    Any other path (a file elsewhere on the server, a link or `..` leading out of the folder, a URL) is answered
    with one gr.Error that is the same whether or not the path exists.

    Why Gradio's own check is not enough (Gradio 6.31, processing_utils._check_allowed, which preprocess_data runs
    with check_in_upload_folder=True so that allowed_paths do not apply to inputs):
    - It returns without checking anything unless `blocks.has_launched`, which only launch() sets: served through
      gr.mount_gradio_app or a TestClient, a FileData path such as /var/tmp/secret.opus is copied into the cache
      and handed to the handler.
    - It exempts static files (utils.is_static_file), and its refusal reaches the client as a bare "Error".
    - The issue's reproduction never reached it at all: gradio_client's Client.predict uploads whatever local
      file a FileData dict names (Endpoint._upload_file) before calling, so a client on the server's own machine
      sends the file as a genuine upload, and the probes' three answers ("No such file", "Is a directory") were
      raised inside the client. What a client may read and upload is not the server's to decide; a path the
      server is given is, and this check decides it the same way however the app is served.
    """
    import gradio as gr
    from gradio_client.utils import is_file_obj, traverse

    preprocess_data = demo.preprocess_data

    def check(file: dict) -> dict:
        try:
            uploaded_file(file["path"], demo.GRADIO_CACHE)
        except NotUploadedError as e:
            raise gr.Error(f"That is {e}.") from e
        return file

    @logged_as_one_line
    async def check_files(inputs) -> None:
        traverse(inputs, check, is_file_obj)  # any {"path": ...}, with or without Gradio's "meta" mark

    @functools.wraps(preprocess_data)
    async def checked(block_fn, inputs, *args, **kwargs):
        await check_files(inputs)  # logs its own refusal; Gradio's own errors below are logged where they were
        return await preprocess_data(block_fn, inputs, *args, **kwargs)

    demo.preprocess_data = checked


def logged_as_one_line(handler):
    """`handler` with the gr.Error it raises logged as one line on stderr instead of Gradio's full traceback.

    gr.Error is the page's answer to something the user can fix (no photo, a filter matching nothing, a file
    that is not audio): a traceback would bury the real faults, which still get theirs.
    """
    import gradio as gr

    def log(e: gr.Error) -> None:
        e.print_exception = False
        print("User error: " + " ".join(str(e.message).split()), file=sys.stderr)

    if inspect.iscoroutinefunction(handler):  # Gradio awaits it: so must the wrapper, or it gets a coroutine
        @functools.wraps(handler)
        async def logged_async(*args, **kwargs):
            try:
                return await handler(*args, **kwargs)
            except gr.Error as e:
                log(e)
                raise

        return logged_async

    @functools.wraps(handler)  # Gradio reads the handler's parameters (gr.Progress) through the wrapper
    def logged(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except gr.Error as e:
            log(e)
            raise

    return logged


# ---------------------------------------------------------------------------------------------- the page


@dataclass
class Page:
    """The page's components that its events read or write (laid out by build_page, wired by wire_page)."""

    demo: Any
    model_status: Any
    model_timer: Any
    image: Any
    text: Any
    topk: Any
    moods: Any
    genres: Any
    button: Any
    caption: Any
    mood_words: Any
    query_text: Any
    tracks: Any
    result: Any
    uploads: Any
    mood_folder: Any
    add: Any
    status: Any
    table: Any
    table_note: Any = None  # above the table: how to edit, and how many tracks it shows
    like: Any = None
    like_button: Any = None
    max_per_artist: Any = None
    diversity: Any = None
    remove_choice: Any = None  # the tracks chosen for removal
    remove: Any = None
    confirm_box: Any = None  # the question a removal must be confirmed in
    confirm_text: Any = None
    confirm: Any = None
    cancel: Any = None
    bpm: Any = None
    # The Slideshow tab
    slideshow_photos: Any = None
    sort_photos: Any = None
    seconds: Any = None
    slideshow_text: Any = None
    slideshow_moods: Any = None
    slideshow_genres: Any = None
    make: Any = None
    stop: Any = None
    slideshow_status: Any = None
    slideshow_view: Any = None
    slideshow_result: Any = None
    slideshow_state: Any = None  # the session's Slideshow
    next_scene: Any = None  # the scene whose "Next-best track" button was pressed
    next_best: Any = None


def photo_input(**kwargs):
    """gr.Image that answers a file Pillow cannot open with a message, not a bare "Error".

    The check wraps this one instance: subclassing gr.Image would make Gradio write app.pyi beside app.py.
    """
    import gradio as gr

    image = gr.Image(**kwargs)
    preprocess = image.preprocess

    def checked(payload):
        try:
            return preprocess(payload)
        except Exception as e:  # Pillow raises UnidentifiedImageError, OSError, DecompressionBombError...
            name = getattr(payload, "orig_name", None) or "the file"
            raise gr.Error(unreadable_photo_message(name, e)) from e

    image.preprocess = logged_as_one_line(checked)
    return image


def build_page(models: BackgroundModels) -> Page:
    """The layout: what the page shows and where. Its behaviour is wire_page's."""
    import gradio as gr

    # Gradio removes the uploads it keeps (photos, which the page may ask about again) after UPLOAD_KEEP_S, and
    # all of them when the server stops; audio uploads are removed by the add-music handler once copied.
    with gr.Blocks(title="Music for a photo", analytics_enabled=False,
                   delete_cache=(UPLOAD_SWEEP_S, UPLOAD_KEEP_S)) as demo:
        gr.Markdown("# Music for a photo\nUpload a photo: it is captioned, given mood words, and matched against "
                    "your music library. Each track plays from its best-matching moment.")
        model_status = gr.Markdown(models.status(), visible=bool(models.status()), elem_id="model-status")
        model_timer = gr.Timer(1.0, active=not models.ready.is_set())
        with gr.Tab("Recommend"):
            with gr.Row():
                with gr.Column(scale=1):
                    image = photo_input(label="Photo", type="filepath", image_mode=None,
                                        sources=["upload", "webcam", "clipboard"], elem_id="photo")
                    text = gr.Textbox("", label="Words (optional)", placeholder="rainy night, jazz", elem_id="text")
                    topk = gr.Slider(1, TOPK_MAX, value=10, step=1, label="How many tracks", elem_id="topk")
                    topk.preprocess = logged_as_one_line(topk.preprocess)  # an API call may ask for more
                    moods = gr.Dropdown([], value=[], multiselect=True, allow_custom_value=True,
                                        label="Only these moods", elem_id="moods")
                    genres = gr.Dropdown([], value=[], multiselect=True,
                                         allow_custom_value=True, label="Only these genres", elem_id="genres")
                    bpm = gr.Textbox("", label="Only this tempo (BPM)", placeholder="80-110",
                                     info=BPM_RANGE_FORMS, elem_id="bpm")
                    with gr.Accordion("Options", open=False, elem_id="options"):
                        max_per_artist = gr.Slider(0, TOPK_MAX, value=DEFAULT_MAX_PER_ARTIST, step=1,
                                                   label="At most this many tracks of one artist (and of one album); "
                                                         "0 = no cap", elem_id="max-per-artist")
                        diversity = gr.Slider(0, 1, value=0, step=0.05, label="Variety: 0 = the closest tracks; "
                                              "higher trades closeness for tracks unlike each other (MMR)",
                                              elem_id="diversity")
                    for option in (max_per_artist, diversity):  # an API call may ask for values off the sliders
                        option.preprocess = logged_as_one_line(option.preprocess)
                    button = gr.Button("Recommend", variant="primary", elem_id="recommend")
                    examples = [[str(EXAMPLES / name)] for name in EXAMPLE_PHOTOS if (EXAMPLES / name).exists()]
                    if examples:
                        gr.Examples(examples, inputs=[image], label="Example photos")
                with gr.Column(scale=2):
                    caption = gr.Textbox(label="Caption", interactive=False, elem_id="caption")
                    mood_words = gr.Textbox(label="Mood words", interactive=False, elem_id="mood-words")
                    query_text = gr.Textbox(label="Query text (exactly what CLAP embeds)", interactive=False,
                                            elem_id="query-text")
                    tracks = gr.HTML(render_tracks({}), elem_id="tracks", js_on_load=ASK_MORE_LIKE_THIS)
                    with gr.Accordion("As JSON (what the /recommend API returns)", open=False):
                        result = gr.JSON(label="Recommendation", elem_id="result")
                    # What each result's "More like this" button sets and presses (ASK_MORE_LIKE_THIS): in the
                    # page but not shown, so its script can reach them.
                    like = gr.Textbox("", visible="hidden", elem_id="like")
                    like_button = gr.Button("More like this", visible="hidden", elem_id="more-like-this")
        with gr.Tab("Slideshow"):
            gr.Markdown(f"Drop in the photos of an album, a trip or an event ({MIN_PHOTOS} to "
                        f"{MAX_SLIDESHOW_PHOTOS}): they get one soundtrack from your library, cut into scenes "
                        f"where the photos change, and a slideshow video with it. The photos are shown in the "
                        f"order of the list, file-name order as they are added; drag one to move it.")
            with gr.Row():
                with gr.Column(scale=1):
                    slideshow_photos = gr.File(label="Photos, in the order shown", file_count="multiple",
                                               file_types=["image"], type="filepath", allow_reordering=True,
                                               height=320, elem_id="slideshow-photos")
                    slideshow_photos.preprocess = upload_paths
                    sort_photos = gr.Button("Sort by file name", size="sm", elem_id="sort-photos")
                    seconds = gr.Slider(*SLIDESHOW_SECONDS, value=DEFAULT_SECONDS_PER_PHOTO, step=0.5,
                                        label="Seconds per photo", elem_id="slideshow-seconds")
                    seconds.preprocess = logged_as_one_line(seconds.preprocess)  # an API call may ask for more
                    slideshow_text = gr.Textbox("", label="Words for the whole set (optional)",
                                                placeholder="wedding, joyful", elem_id="slideshow-text")
                    slideshow_moods = gr.Dropdown([], value=[], multiselect=True, allow_custom_value=True,
                                                  label="Only these moods", elem_id="slideshow-moods")
                    slideshow_genres = gr.Dropdown([], value=[], multiselect=True, allow_custom_value=True,
                                                   label="Only these genres", elem_id="slideshow-genres")
                    with gr.Row():
                        make = gr.Button("Make the soundtrack", variant="primary", scale=2, elem_id="make-soundtrack")
                        stop = gr.Button("Cancel", variant="stop", scale=1, elem_id="cancel-soundtrack")
                    slideshow_status = gr.Markdown("", elem_id="slideshow-status")
                with gr.Column(scale=2):
                    slideshow_view = gr.HTML(render_slideshow(None), min_height=200, elem_id="slideshow",
                                             js_on_load=ASK_NEXT_BEST)
                    with gr.Accordion("As JSON (what the /soundtrack API returns)", open=False):
                        slideshow_result = gr.JSON(label="Soundtrack", elem_id="slideshow-result")
                    # What a scene's "Next-best track" button sets and presses (ASK_NEXT_BEST).
                    next_scene = gr.Number(0, precision=0, visible="hidden", elem_id="next-scene")
                    next_best = gr.Button("Next-best track", visible="hidden", elem_id="next-best")
            slideshow_state = gr.State(None, time_to_live=UPLOAD_KEEP_S)  # as long as its photos are kept
        with gr.Tab("Library"):
            gr.Markdown("Add audio files: they are embedded with the same code as `python music_to_vector.py`, "
                        "moved to `processed_music/`, and recommendable at once.")
            with gr.Row():
                uploads = gr.File(label="Audio files", file_count="multiple", type="filepath",
                                  file_types=list(AUDIO_EXTENSIONS), elem_id="uploads")
                uploads.preprocess = upload_paths
                with gr.Column():
                    mood_folder = gr.Textbox(label="Mood of these files (optional)", placeholder="calm",
                                             elem_id="upload-mood")
                    add = gr.Button("Add to library", variant="primary", elem_id="add-music")
                    status = gr.Markdown("", elem_id="library-status")
            table_note = gr.Markdown(library_table_note(0), elem_id="library-note")
            table = gr.Dataframe([], headers=LIBRARY_COLUMNS, type="array", interactive=True, elem_id="library",
                                 static_columns=[i for i, name in enumerate(LIBRARY_COLUMNS)
                                                 if name not in EDITABLE_FIELDS])
            with gr.Row(equal_height=True):
                remove_choice = gr.Dropdown([], value=[], multiselect=True, allow_custom_value=True, scale=4,
                                            label="Tracks to remove (choose them, type a track id, or click a "
                                                  "track's file in the table)", elem_id="remove-tracks")
                remove = gr.Button("Remove from the library…", variant="stop", scale=1, elem_id="remove")
            with gr.Group(visible=False, elem_id="remove-confirm") as confirm_box:
                confirm_text = gr.Markdown("", elem_id="remove-question")
                with gr.Row():
                    confirm = gr.Button("Yes, remove them", variant="stop", elem_id="remove-yes")
                    cancel = gr.Button("Cancel", elem_id="remove-cancel")
    return Page(demo=demo, model_status=model_status, model_timer=model_timer, image=image, text=text, topk=topk,
                moods=moods, genres=genres, button=button, caption=caption, mood_words=mood_words,
                query_text=query_text, tracks=tracks, result=result, uploads=uploads, mood_folder=mood_folder,
                add=add, status=status, table=table, table_note=table_note, like=like, like_button=like_button,
                max_per_artist=max_per_artist, diversity=diversity, remove_choice=remove_choice, remove=remove,
                confirm_box=confirm_box, confirm_text=confirm_text, confirm=confirm, cancel=cancel,
                slideshow_photos=slideshow_photos, sort_photos=sort_photos, seconds=seconds,
                slideshow_text=slideshow_text, slideshow_moods=slideshow_moods, slideshow_genres=slideshow_genres,
                make=make, stop=stop, slideshow_status=slideshow_status, slideshow_view=slideshow_view,
                slideshow_result=slideshow_result, slideshow_state=slideshow_state, next_scene=next_scene,
                next_best=next_best, bpm=bpm)


def wire_page(page: Page, library: LiveLibrary, models: BackgroundModels, renders: RenderFolders) -> None:
    """The behaviour: which handler each event of the page runs, on what, and where its answer goes. `renders`
    holds what the Slideshow tab renders, one folder per soundtrack (served by serve.render_routes)."""
    import gradio as gr

    # The variety options, then the tempo box, come last, with their defaults: a client that does not send them
    # still works.
    def on_recommend(image, text, topk, moods, genres, max_per_artist=DEFAULT_MAX_PER_ARTIST, diversity=0.0,
                     bpm=""):
        tempo_filter(bpm)  # a mistyped range is said at once, before waiting for the models
        try:
            blip, clap = models.query_models()
        except ModelLoadError as e:
            raise gr.Error(str(e)) from e
        try:
            return recommend_photo(library, blip, clap, image, text, topk, moods, genres, max_per_artist, diversity,
                                   bpm)
        finally:
            release_freed_memory()  # a query's activations, ~200 MB, would otherwise stay in the server's RSS

    def on_photo(image, text, topk, moods, genres, max_per_artist=DEFAULT_MAX_PER_ARTIST, diversity=0.0, bpm=""):
        """A new photo (upload, webcam, paste, example) is answered at once; clearing it changes nothing."""
        if image is None:
            return gr.skip()
        return on_recommend(image, text, topk, moods, genres, max_per_artist, diversity, bpm)

    def on_like(like, topk, moods, genres, max_per_artist=DEFAULT_MAX_PER_ARTIST, diversity=0.0, bpm=""):
        return recommend_like(library, like, topk, moods, genres, max_per_artist, diversity, bpm)

    def on_add_music(files, mood, progress=gr.Progress(track_tqdm=True)):  # noqa: B008 (how Gradio asks for it)
        if not files:
            raise gr.Error("Choose one or more audio files first.")
        try:
            clap_audio = models.audio_model()  # waits for the start-up loads, as the text tower's load below must
            tagger = tagger_of(load_clap_text(models.clap_model, models.precision, models.backend))
            result, problems = add_uploads(library.paths, clap_audio, files, mood, progress, tagger=tagger)
        except (DatabaseError, LibraryBusyError, ModelLoadError) as e:
            raise gr.Error(str(e)) from e
        finally:
            discard(files)  # copied into new_music/, or refused: the page clears them from the form anyway
        for problem in problems:
            gr.Warning(problem)
        db = current_library()
        return (*library_outputs(db), upload_status(result, problems, len(db)), None)

    def discard(files):
        keep = {str(p) for block in page.demo.blocks.values() for p in getattr(block, "keep_in_cache", ())}
        discard_uploads(files, Path(page.demo.GRADIO_CACHE), keep)

    def current_library() -> Database:
        try:
            return library.current()
        except DatabaseError as e:
            raise gr.Error(f"The music database cannot be used: {e}") from e

    def library_outputs(db):
        moods, genres = gr.update(choices=tag_values(db, "mood")), gr.update(choices=tag_values(db, "genre"))
        return moods, genres, moods, genres, library_rows(db), library_table_note(len(db))

    # What library_outputs fills, in its order: both tabs' filters offer the library's moods and genres.
    library_view = [page.moods, page.genres, page.slideshow_moods, page.slideshow_genres, page.table,
                    page.table_note]

    def on_show_library():
        """The library as stored, and how many tracks it holds: when a page opens (not as it was when the server
        started), and after a refused edit (the page's table may be older than the library)."""
        db = current_library()
        return (*library_outputs(db), f"The library holds {len(db)} track(s).")

    echoes = EditEchoes()

    def on_edit_cell(table, edit, request):
        """A cell of the table was edited: commit it, then show the library as stored (a failure shows it too)."""
        sent = json.dumps([table, edit.index, edit.value, edit.previous_value], default=str)
        if echoes.is_echo(request.session_hash, sent):
            return gr.skip()
        try:
            status = edit_cell(library, table, edit.index, edit.value)
        except gr.Error:
            echoes.refused(request.session_hash, sent)
            raise
        return (*library_outputs(current_library()), status)

    def on_pick(chosen, picked):
        """A click on a track's file in the table adds that track to the ones to remove."""
        if picked.index[1] != FILE_COLUMN or not picked.row_value:
            return gr.skip()
        file_path = str(picked.row_value[FILE_COLUMN])
        return gr.skip() if file_path in (chosen or []) else [*(chosen or []), file_path]

    # How Gradio knows to pass an event's data: by the parameter's type, which the module's postponed (string)
    # annotations could not give, gradio being imported inside functions.
    on_edit_cell.__annotations__ = {"edit": gr.EditData, "request": gr.Request}
    on_pick.__annotations__ = {"picked": gr.SelectData}

    def on_ask_remove(chosen):
        """The Remove button only asks: the tracks go when the question is answered yes."""
        return gr.update(visible=True), removal_question(library, chosen)

    def on_remove(chosen):
        answer = remove_from_library(library, chosen)
        return (*library_outputs(current_library()), removal_status(answer), [], gr.update(visible=False))

    def hide_question():
        return gr.update(visible=False)

    def on_table_change(rows):
        return gr.update(choices=removal_choices(rows))

    # The API's own endpoints for the Library tab's changes, typed by these signatures (gr.api).
    def set_track_fields(track: str, fields: dict) -> dict:
        """Correct a track (its file_path or id): fields such as {"mood": "calm"} (title, artist, mood, genre), one
        commit, kept by --rebuild. Returns the track's id, file_path and tags after."""
        return correct_track(library, track, fields)

    def remove_library_tracks(tracks: list[str]) -> dict:
        """Remove tracks (file paths or ids) from the library in one commit; their files move to removed/ in the
        library folder. Returns {"removed": [{"file_path", "moved_to"}], "tracks": how many are left}."""
        return remove_from_library(library, tracks)

    # The Slideshow tab. Its work runs in a worker thread (run_until_cancelled) so that Cancel can stop it; the
    # session's Slideshow (gr.State) names the folder of its files, removed when the next one is ready, when Gradio
    # deletes the state (an hour after it was set, as the uploaded photos) and when the server stops.
    page.slideshow_state.delete_callback = lambda slideshow: renders.remove(getattr(slideshow, "token", None))

    def slideshow_done(slideshow: Slideshow, before: Slideshow | None):
        for skipped in skipped_photos(slideshow.plan):
            gr.Warning(f"{skipped['error']}: left out of the soundtrack.")
        if before is not None and before.token != slideshow.token:
            renders.remove(before.token)  # the page shows the new one from now on
        return slideshow_answer(slideshow), slideshow

    async def on_make(photos, seconds_per_photo, text, moods, genres, session,
                      progress=gr.Progress(track_tqdm=True)):  # noqa: B008 (how Gradio asks for it)
        photos = slideshow_photos(photos)
        report = progress_reporter(progress)

        def work(should_stop):
            with slideshow_errors(photos):
                blip, clap = models.query_models()
                try:
                    return make_slideshow(renders, blip, clap, library.current(), photos, seconds_per_photo, text,
                                          Filters(moods, genres), should_stop, report)
                finally:
                    release_freed_memory()

        return slideshow_done(await run_until_cancelled(work), session)

    async def on_next_best(scene_index, session, progress=gr.Progress()):  # noqa: B008
        if session is None:
            raise gr.Error("Make a soundtrack first: a scene's track is replaced in the soundtrack this page made.")
        report = progress_reporter(progress)

        def work(should_stop):
            with slideshow_errors(photo.path for photo in session.plan.photos):
                return next_best_slideshow(renders, library.current(), session, int(scene_index), should_stop,
                                           report)

        return slideshow_done(await run_until_cancelled(work), session)

    def slideshow_status(answer):
        scenes, total = len(answer["scenes"]), format_duration(answer["total_s"])
        return (f"A soundtrack of {total} for {len(answer['photos'])} photos in {scenes} scene(s); the video, the "
                f"soundtrack and the files to download are beside.")

    def on_stop():
        return "Cancelled: the work in progress stopped, and the files it had started were removed."

    def on_tick():
        """Shows the models' state until they are loaded, then stops polling."""
        status = models.status()
        return gr.update(value=status, visible=bool(status)), gr.Timer(active=not models.ready.is_set())

    def answer(event, handler, **api):
        """Run `handler` on the query inputs when `event` fires, then show its result."""
        event(handler, inputs=[page.image, page.text, page.topk, page.moods, page.genres, page.max_per_artist,
                               page.diversity, page.bpm], outputs=page.result, concurrency_id="models", **api).success(
            render_analysis, inputs=page.result, outputs=[page.caption, page.mood_words, page.query_text, page.tracks],
            api_visibility="private", queue=False)

    with page.demo:
        answer(page.button.click, logged_as_one_line(on_recommend), api_name="recommend")
        # Dropping in a photo is asking for its music; the button then re-asks with other words, top-k or
        # filters, which is quick because the photo's caption and mood words are remembered.
        answer(page.image.change, logged_as_one_line(on_photo), api_visibility="private")
        page.like_button.click(logged_as_one_line(on_like), inputs=[page.like, page.topk, page.moods, page.genres,
                                                                    page.max_per_artist, page.diversity, page.bpm],
                               outputs=page.result, api_name="more_like_this", queue=False).success(
            render_analysis, inputs=page.result, outputs=[page.caption, page.mood_words, page.query_text, page.tracks],
            api_visibility="private", queue=False)
        page.add.click(logged_as_one_line(on_add_music), inputs=[page.uploads, page.mood_folder],
                       outputs=[*library_view, page.status, page.uploads], api_name="add_music",
                       concurrency_id="models")
        page.demo.load(logged_as_one_line(on_show_library), outputs=[*library_view, page.status],
                       api_visibility="private", queue=False)
        # The Library tab's corrections and removals: each one commit (music_mood.edit), then the table, the
        # filters' choices and the removal list show the library as stored; recommendations read it per request.
        page.table.edit(logged_as_one_line(on_edit_cell), inputs=page.table, outputs=[*library_view, page.status],
                        api_visibility="private").failure(  # a refused edit: the tab shows what is stored
            logged_as_one_line(on_show_library), outputs=[*library_view, page.status], api_visibility="private",
            queue=False)
        page.table.select(on_pick, inputs=page.remove_choice, outputs=page.remove_choice, api_visibility="private",
                          queue=False)
        page.table.change(on_table_change, inputs=page.table, outputs=page.remove_choice, api_visibility="private",
                          queue=False)
        page.remove.click(logged_as_one_line(on_ask_remove), inputs=page.remove_choice,
                          outputs=[page.confirm_box, page.confirm_text], api_visibility="private", queue=False)
        page.confirm.click(logged_as_one_line(on_remove), inputs=page.remove_choice,
                           outputs=[*library_view, page.status, page.remove_choice, page.confirm_box],
                           api_visibility="private")
        for event in (page.cancel.click, page.remove_choice.change):  # the question names exactly what goes
            event(hide_question, outputs=page.confirm_box, api_visibility="private", queue=False)
        # The Slideshow tab: photos in, a soundtrack planned and rendered (/soundtrack); a scene's track replaced
        # (/next_best_track). Both hold the models' turn: they describe photos or render, using every core.
        slideshow_answered = [page.slideshow_result, page.slideshow_state]
        making = page.make.click(logged_as_one_line(on_make), inputs=[
            page.slideshow_photos, page.seconds, page.slideshow_text, page.slideshow_moods, page.slideshow_genres,
            page.slideshow_state], outputs=slideshow_answered, api_name="soundtrack", concurrency_id="models",
            show_progress_on=page.slideshow_view)
        replacing = page.next_best.click(logged_as_one_line(on_next_best), inputs=[page.next_scene,
                                                                                   page.slideshow_state],
                                         outputs=slideshow_answered, api_name="next_best_track",
                                         concurrency_id="models", show_progress_on=page.slideshow_view)
        for event in (making, replacing):
            event.success(render_slideshow, inputs=page.slideshow_result, outputs=page.slideshow_view,
                          api_visibility="private", queue=False).success(
                slideshow_status, inputs=page.slideshow_result, outputs=page.slideshow_status,
                api_visibility="private", queue=False)
        page.stop.click(on_stop, outputs=page.slideshow_status, cancels=[making, replacing],
                        api_visibility="private", queue=False)
        for event in (page.slideshow_photos.upload, page.sort_photos.click):  # file-name order, in the browser
            event(None, inputs=page.slideshow_photos, outputs=page.slideshow_photos, js=SORT_BY_NAME,
                  api_visibility="private", queue=False)
        gr.api(logged_as_one_line(set_track_fields), api_name="set_track_fields")
        gr.api(logged_as_one_line(remove_library_tracks), api_name="remove_tracks")
        ticking = [page.model_status, page.model_timer]
        page.demo.load(on_tick, outputs=ticking, api_visibility="private", queue=False)
        page.model_timer.tick(on_tick, outputs=ticking, api_visibility="private", queue=False)
    # One model call at a time (they use every core anyway), and a bounded wait line.
    page.demo.queue(default_concurrency_limit=1, max_size=QUEUE_SIZE)


def build_app(library: LiveLibrary, models: BackgroundModels, renders: RenderFolders | None = None):
    """The Gradio Blocks of the page; `models` may still be loading when it is served. `renders` holds what the
    Slideshow tab renders (a new RenderFolders, whose folder is made on first use, if not given)."""
    page = build_page(models)
    wire_page(page, library, models, renders if renders is not None else RenderFolders())
    refuse_foreign_files(page.demo)
    return page.demo


# ---------------------------------------------------------------------------------------------- start-up


def prepare_library(library: LiveLibrary, precision: str, backend: str = "auto") -> None:
    """Before serving: add whatever waits in new_music/ (or unlisted in processed_music/); if the library has
    nothing at all, import the bundled sample tracks first. Progress goes to stderr."""
    paths = library.paths
    db = library.current()
    pending = pending_files(paths, db)
    if not len(db) and not pending:
        print(f"The library is empty: importing the sample tracks of {SAMPLE_PACKAGE}.", file=sys.stderr)
        try:
            pending = import_sample_library(paths)
        except RuntimeError as e:
            print(f"Warning: {e}; serving an empty library (add music in the Library tab).", file=sys.stderr)
            return
    if not pending:
        return
    print(f"Adding {len(pending)} audio file(s) to the library in {paths.root}.", file=sys.stderr)
    report = build_library(load_clap_audio(library.clap_model, precision, backend), paths, progress=True,
                           tagger=tagger_of(load_clap_text(library.clap_model, precision, backend)))
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
    args = build_parser().parse_args(argv)
    paths = LibraryPaths.at(args.library, args.vectors, args.meta)
    if port_in_use(args.host, args.port):
        print(f"Error: {port_busy_message(args.port)}", file=sys.stderr)
        return 1
    try:
        library = LiveLibrary(paths, args.clap_model)
        prepare_library(library, args.precision, args.backend)
    except (DatabaseError, ModelLoadError, LibraryBusyError, OSError) as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # while adding music: the library is whole (one commit per change)
        print("Interrupted: nothing was lost; the library is as its last commit left it.", file=sys.stderr)
        return 130
    paths.processed_music.mkdir(parents=True, exist_ok=True)
    models = BackgroundModels(args.blip_model, args.clap_model, args.precision, args.backend)
    renders = RenderFolders()
    demo = build_app(library, models, renders)
    try:
        # No allowed_paths: Gradio serves nothing of the library; its audio goes through track_routes alone, and
        # the soundtracks the page renders through render_routes.
        demo.launch(server_name=args.host, server_port=args.port, share=args.share, prevent_thread_lock=True,
                    app_kwargs={"routes": track_routes(library) + render_routes(renders)},
                    max_file_size=MAX_UPLOAD, css=CSS, ssr_mode=False, quiet=True)
    except OSError:  # Gradio's message tells to edit launch(); the user has flags
        reason = (port_busy_message(args.port) if port_in_use(args.host, args.port) else
                  f"cannot listen on {args.host}:{args.port}; check --host and --port")
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
            # Loaded while the page is up, so a visitor sees that it is loading rather than no page at all.
            print(f"Loading models: {args.blip_model}, {args.clap_model} ({args.precision}, backend "
                  f"{args.backend})...", file=sys.stderr)
            loader = threading.Thread(target=models.load, name="load-models", daemon=True)
            loader.start()
            while not (stop.requested or models.ready.wait(STOP_POLL_S)):
                pass
            if not stop.requested:
                if models.error:
                    print(f"Error: {models.error}", file=sys.stderr)
                    return 1
                freeze_loaded_objects()  # requests' collections no longer scan the models' objects
                tracks = len(library.current())
                print(f"Models loaded; {tracks} tracks in {paths.root}.", file=sys.stderr)
                if not tracks:
                    print(f"Warning: {EMPTY_LIBRARY}", file=sys.stderr)
            while not stop.requested:  # serve until asked to stop
                time.sleep(STOP_POLL_S)
            print("Stopping the server.", file=sys.stderr)
        finally:
            demo.close(verbose=False)
            renders.close()  # every soundtrack rendered for a visitor: they lived in the system's temporary folder
    if loader.is_alive():
        # Stopped while the models load: the loader is inside torch's or ONNX Runtime's native code, and tearing
        # the interpreter down under it aborts the process ("terminate called without an active exception",
        # SIGABRT). Everything the app must clean up is cleaned up above, so leave without the teardown.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
