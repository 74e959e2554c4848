"""The page's HTML and Markdown: results, slideshows, the Library table and its messages, as plain functions of
plain data (no Gradio), and the CSS and scripts read from their files."""
from __future__ import annotations

import html
import re
from importlib import resources

from PIL import Image, UnidentifiedImageError

from music_mood.database import Database
from music_mood.display import TAG_COLUMNS, format_bpm, format_duration, track_tags
from music_mood.edit import REMOVED_FOLDER
from music_mood.remote import UNKNOWN_SERVER, is_server_track, page_file_path
from music_mood.serve import track_url
from music_mood.slideshows import SLIDESHOW_FILES

LIBRARY_COLUMNS = ["#", *(key for key, _ in TAG_COLUMNS), "bpm", "length", "source", "file"]
FILE_COLUMN = LIBRARY_COLUMNS.index("file")  # what names a row's track when one of its cells is edited
LIBRARY_TABLE_MAX_ROWS = 5_000  # a browser table of a whole catalogue would freeze the page
LIBRARY_SOURCE = "library"  # the source column of a track of processed_music/, the library's own folder
AUTO_MARK = " (auto)"  # how the table shows a track's best automatic tag where it has no mood/genre of its own


def page_asset(name: str) -> str:
    """The text of one of the page's CSS or script files (music_mood/web/assets/, package data)."""
    return (resources.files(__package__) / "assets" / name).read_text(encoding="utf-8")


def audio_url(track_id: str, start_s: float | None = None) -> str:
    """The URL the page plays a track from, by its id; `#t=` makes the browser start at `start_s` seconds."""
    url = track_url(track_id)
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


# The download links of a slideshow, by the kind of file (SLIDESHOW_FILES): the video and its parts, then what a video
# editor opens (README: Slideshows says which editor takes which).
DOWNLOADS = (("mp4", "Video (MP4)"), ("m4a", "Soundtrack (M4A)"), ("m3u8", "Playlist (M3U8)"), ("json", "Plan (JSON)"),
             ("otio", "Timeline (OTIO)"), ("xml", "Premiere / Resolve (FCP XML)"), ("edl", "EDL (CMX 3600)"),
             ("wav", "Mixed audio (WAV)"))


def render_slideshow(answer: dict | None) -> str:
    """A /soundtrack answer as HTML: the slideshow's video, the mixed soundtrack's player, the download links, then
    each scene (render_scene). All text escaped."""
    if not answer or not answer.get("scenes"):
        return ("<p>No soundtrack yet: drop in photos, choose how long each is shown, and press "
                "“Make the soundtrack”.</p>")
    files = {kind: html.escape(url) for kind, url in answer["files"].items()}
    links = " ".join(f'<a class="download" data-kind="{kind}" href="{files[kind]}" download="{SLIDESHOW_FILES[kind]}">'
                     f"{label}</a>" for kind, label in DOWNLOADS)
    notes = []
    if answer.get("tracks_repeat"):
        notes.append("The library has fewer tracks than this soundtrack needs: some tracks play twice.")
    skipped = answer.get("skipped_photos") or []
    if skipped:
        notes.append(f"Left out, unreadable: {html.escape(', '.join(s['name'] for s in skipped))}.")
    scenes = "".join(render_scene(scene, answer["photos"]) for scene in answer["scenes"])
    return (f'<div class="slideshow"><video controls preload="metadata" src="{files["mp4"]}"></video>'
            f'<div class="mix"><span>Soundtrack</span><audio controls preload="metadata" src="{files["m4a"]}">'
            f'</audio></div><div class="downloads">Download: {links}</div>'
            + "".join(f'<p class="note">{note}</p>' for note in notes)
            + f'<ol class="scenes">{scenes}</ol></div>')


def beat_place(piece: dict) -> str:
    """A beat-synced piece's tempo and where its stretch starts, in bars and beats (" · 120.0 BPM, from bar 5
    beat 1"); its tempo alone by the clock; nothing for music without a beat."""
    tempo = format_bpm(piece.get("tempo_bpm"))
    if piece.get("start_bar") is not None:
        return f' · <span class="tempo">{tempo}, from bar {piece["start_bar"]} beat {piece["start_beat"]}</span>'
    return f' · <span class="tempo">{tempo}</span>' if tempo else ""


def render_scene(scene: dict, photos: list[dict]) -> str:
    """One scene of a soundtrack as an HTML list item: its photos' thumbnails, its music (a player per piece,
    playing just the stretch the soundtrack uses), why it was picked and its "Next-best track" button."""
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
            f'{format_duration(piece["track_start_s"])}–{format_duration(piece["track_end_s"])} of the track'
            f'{beat_place(piece)} · score {piece["score"]:.3f}'
            f'<audio controls preload="none" src="{html.escape(piece["audio_url"] + stretch)}"></audio></div>')
    why = [f"these photos read as {html.escape(', '.join(scene['mood_words']) or '–')}"]
    if scene.get("shared_mood_words"):
        why.append(f"the track is tagged {html.escape(', '.join(scene['shared_mood_words']))}")
    query = f"<details><summary>The query (what CLAP matched)</summary>{html.escape(scene['query_text'])}</details>"
    span = f"photo {members[0] + 1}" if len(members) == 1 else f"photos {members[0] + 1}–{members[-1] + 1}"
    return (f'<li class="scene" data-scene="{scene["index"]}"><b>Scene {scene["index"] + 1}</b> · '
            f'{format_duration(scene["start_s"])}–{format_duration(scene["end_s"])} · {span}'
            f'<button class="next-best" data-scene="{scene["index"]}">Next-best track</button>'
            f'<div class="thumbs">{thumbs}</div>{"".join(pieces)}<div class="why">Why: {"; ".join(why)}.{query}</div>'
            f'</li>')


def slideshow_status(answer: dict) -> str:
    """The Slideshow tab's status line once a soundtrack is ready."""
    scenes, total = len(answer["scenes"]), format_duration(answer["total_s"])
    return (f"A soundtrack of {total} for {len(answer['photos'])} photos in {scenes} scene(s); the video, the "
            f"soundtrack and the files to download are beside.")


def saved_playlist_status(answer: dict) -> str:
    """The "Save as playlist" status: where the playlist went (a file in the library folder, a playlist on a
    server, named by its label: "Subsonic server 1") and how many tracks; which tracks, when they went to more
    than one place; and each server that failed, with the tracks it did not get and why."""
    several = len(answer["saved"]) + len(answer.get("failed", [])) > 1

    def tracks(place: dict) -> str:
        titles = f" ({markdown_text(', '.join(place.get('titles', [])))})" if several else ""
        return f"{place['tracks']} track(s){titles}"

    places = "; ".join(f"{tracks(place)} in {markdown_text(place['file'])} in the library folder"
                       if place["to"] == "m3u8" else f"{tracks(place)} on {markdown_text(place['server'])}"
                       for place in answer["saved"])
    lines = [f"Saved the playlist “{markdown_text(answer['name'])}”: {places}."]
    lines += [f"Not saved on {markdown_text(place['server'])}: {tracks(place)}: "
              f"{markdown_text(place['error'])}" for place in answer.get("failed", [])]
    return "\n\n".join(lines)


def library_rows(db: Database, servers: dict[str, str] | None = None) -> list[list]:
    """The Library tab's table: number, the tag columns, tempo, length, source (source_name) and file of every track
    (of the first LIBRARY_TABLE_MAX_ROWS: a catalogue is browsed with python music_to_vector.py --list); a server's
    song is filed under its id (remote.page_file_path). `servers`: the labels of the library's servers."""
    servers = servers or {}
    return [[i, *track_tags(t), format_bpm(t.get("bpm"), unit=""), format_duration(float(t.get("duration_s", 0) or 0)),
             source_name(t, servers), page_file_path(t)]
            for i, t in enumerate(db.tracks[:LIBRARY_TABLE_MAX_ROWS], 1)]


def source_name(track: dict, servers: dict[str, str]) -> str:
    """Where a track comes from, as the Library table says it: LIBRARY_SOURCE for processed_music/, a folder
    source's path as --list-sources shows it, a server's label in `servers` ({address: "Subsonic server N"},
    remote.server_labels), never its address."""
    if is_server_track(track):
        return servers.get(str(track.get("source")), UNKNOWN_SERVER)
    return str(track.get("source") or LIBRARY_SOURCE)


def library_table_note(tracks: int) -> str:
    """What the Library tab says above its table of a library of `tracks` tracks: how to edit, and how many of the
    tracks it shows."""
    note = ("Correct a track's title, artist, mood or genre in the table: double-click the cell, type, press Enter "
            "(kept by `python music_to_vector.py --rebuild`).")
    if tracks > LIBRARY_TABLE_MAX_ROWS:
        note += (f" The table shows the first {LIBRARY_TABLE_MAX_ROWS:,} of the {tracks:,} tracks; "
                 f"`python music_to_vector.py --list` lists them all, and a track id typed below removes any of them.")
    return note


def sources_note(lines: list[str]) -> str:
    """The Library tab's list of the library's sources (sources.source_lines), as Markdown; "" with none beside
    processed_music/. Sources are added and removed from the command line only: a page reachable from a network
    must not point the app at a folder of the machine it runs on."""
    if len(lines) < 2:
        return ""
    return ("\n\nSources (the table's source column says each track's; `python music_to_vector.py --add-source "
            "FOLDER_OR_SERVER` or `--remove-source` changes them, from the command line only, and "
            "`--list-sources` gives the servers' addresses, in this order):\n"
            + "".join(f"\n- `{line}`" for line in lines))


def removal_choices(rows: list[list]) -> list[tuple[str, str]]:
    """The tracks the removal list offers, from the Library table's rows: ("title — file", file)."""
    title = LIBRARY_COLUMNS.index("title")
    return [(f"{row[title]} — {row[FILE_COLUMN]}", str(row[FILE_COLUMN])) for row in rows or [] if row[FILE_COLUMN]]


def render_removal_question(db: Database, rows: list[int]) -> str:
    """What the page asks before removing the tracks at `rows` of `db` (as Markdown): which tracks, and where their
    files will go."""
    lines = [f"- {markdown_text(db.tracks[i].get('title') or '')} — {markdown_text(page_file_path(db.tracks[i]))}"
             for i in rows]
    return (f"**Remove {len(rows)} track(s) from the library?**\n\n" + "\n".join(lines) +
            f"\n\nTheir files move to `{REMOVED_FOLDER}/` in the library folder; nothing is deleted (to add a track "
            f"back, move its file into `new_music/`).")


def removal_status(answer: dict) -> str:
    """The Library tab's status after a removal, as Markdown: where each file went."""
    moved = [f"- {markdown_text(item['file_path'])} → "
             f"{markdown_text(item['moved_to']) if item['moved_to'] else 'its file was already gone'}"
             for item in answer["removed"]]
    return (f"Removed {len(answer['removed'])} track(s); their files are in `{REMOVED_FOLDER}/` in the library "
            f"folder. The library holds {answer['tracks']} track(s).\n\n" + "\n".join(moved))


def upload_status(result: dict, problems: list[str], tracks: int) -> str:
    """The Library tab's status after an upload, as Markdown: the counts, then every file not added and why,
    so the /add_music reply carries the reasons and not only the page's warnings."""
    skipped = f"; {result['not_added']} not added" if result["not_added"] else ""
    status = f"Added {len(result['added'])} track(s){skipped}; the library holds {tracks}."
    if problems:
        status += "\n\n" + "\n".join(f"- {markdown_text(problem)}" for problem in problems)
    return status


def markdown_text(text: str) -> str:
    """`text` shown as written in Markdown: a file name may hold *, _, [ or <."""
    return re.sub(r"([\\`*_\[\]<>#|~])", r"\\\1", text)


def unreadable_photo_message(name: str, error: Exception) -> str:
    """What the page says about an upload Pillow could not open: why, in words, never an exception's class."""
    if isinstance(error, FileNotFoundError):
        return f"{name} is no longer on the server (uploads are kept for an hour); drop the photo in again."
    if isinstance(error, UnidentifiedImageError):
        why = "its format is not one of the picture formats we know"
    elif isinstance(error, Image.DecompressionBombError):
        why = "it has too many pixels to open safely"
    else:
        why = "it is damaged or cut short"
    return f"{name} is not an image we can read: {why}. Upload a JPEG, PNG, WebP or similar photo."
