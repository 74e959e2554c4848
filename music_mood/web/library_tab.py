"""The Library tab: the library's tracks in a table, audio uploads added to it, a track corrected in a cell or
removed (the /add_music, /set_track_fields and /remove_tracks endpoints), each change one commit; after each, every
tab shows the library as stored."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import gradio as gr

from music_mood.audio import AUDIO_EXTENSIONS
from music_mood.database import Database, find_track
from music_mood.edit import EDITABLE_FIELDS, field_value, remove_tracks, set_fields
from music_mood.live import LiveLibrary
from music_mood.models import BackgroundModels, load_clap_text
from music_mood.remote import hidden_servers, page_file_path
from music_mood.search import tag_values
from music_mood.sources import source_lines
from music_mood.tags import tagger_of
from music_mood.uploads import add_uploads
from music_mood.web.errors import logged_as_one_line, user_errors
from music_mood.web.guards import discard_uploads, upload_paths
from music_mood.web.views import (
    AUTO_MARK,
    FILE_COLUMN,
    LIBRARY_COLUMNS,
    library_rows,
    library_table_note,
    markdown_text,
    removal_choices,
    removal_status,
    render_removal_question,
    sources_note,
    upload_status,
)

# A correction or removal waits this long for a builder holding the library lock (an upload, music_to_vector.py),
# then says the library is busy: the page's request should not hang for the length of a build.
EDIT_WAIT_S = 30


def current_library(library: LiveLibrary) -> Database:
    """The library as stored now; gr.Error when it cannot be read."""
    with user_errors():
        return library.current()


def correct_track(library: LiveLibrary, track: str, fields: dict) -> dict:
    """The /set_track_fields endpoint: set tags ({"mood": "calm", "title": ...}: title, artist, mood, genre) of the
    track named by `track` (its file_path or id), each value stripped and checked (edit.field_value: one line of
    text, of bounded length). One commit under the library lock (edit.set_fields); the vectors stay, and --rebuild
    keeps the corrections. Values equal to the stored ones commit nothing.

    Returns {"id", "file_path", "title", "artist", "genre", "mood"} of the track after the change (file_path as a
    page names it: remote.page_file_path). An unknown track or field is a gr.Error, and nothing is changed.
    """
    if not isinstance(fields, dict) or not fields:
        raise gr.Error(f"Say which fields to set, e.g. {{\"mood\": \"calm\"}} (a track's editable fields are "
                       f"{', '.join(EDITABLE_FIELDS)}); nothing was changed.")
    unknown = [name for name in fields if name not in EDITABLE_FIELDS]
    if unknown:
        raise gr.Error(f"{unknown[0]!r} cannot be set: a track's editable fields are {', '.join(EDITABLE_FIELDS)}; "
                       f"nothing was changed.")
    with user_errors(change=True):
        values = {name: field_value(name, value) for name, value in fields.items()}
    db = current_library(library)
    with user_errors(change=True):
        record = db.tracks[find_track(db, track)]
        edits = [(track, name, value) for name, value in values.items()]
        edits = [edit for edit in edits if str(record.get(edit[1], "") or "") != edit[2]]
        if edits:
            done, problems = set_fields(library.paths, edits, lock_timeout=EDIT_WAIT_S)
            record = done[-1][0]
            for problem in problems:
                gr.Warning(problem)
    return {**{key: str(record.get(key, "") or "") for key in ("id", *EDITABLE_FIELDS)},
            "file_path": page_file_path(record)}


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
    (gr.Error). Returns {"removed": [{"file_path", "moved_to"}], "tracks": how many are left}: file_path as a page
    names it (remote.page_file_path), moved_to relative to the library folder, None for a file that was already
    gone (and for a server's song, which has none here).
    """
    keys = track_keys(tracks)
    if not keys:
        raise gr.Error("Choose the tracks to remove first.")
    with user_errors(change=True):
        removed, problems = remove_tracks(library.paths, keys, lock_timeout=EDIT_WAIT_S)
    for problem in problems:
        gr.Warning(problem)
    root = library.paths.root
    return {"removed": [{"file_path": page_file_path(record),
                         "moved_to": target.relative_to(root).as_posix() if target else None}
                        for record, target in removed],
            "tracks": len(current_library(library))}


def edit_cell(library: LiveLibrary, table: list[list], index, value) -> str:
    """A cell of the Library table edited in the page: row index[0] of `table` (the table as the page showed it,
    whose file column names the track: its file_path, or a server song's id), column index[1]. Commits it through
    correct_track; returns the status line.

    The "(auto)" mark of an automatic tag is the table's, not part of a word: "calm (auto)" sets "calm".
    """
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
    db = current_library(library)
    if db.row_of_file(file_path) is None and not db.rows_with("id", file_path):
        raise gr.Error(f"{file_path} is no longer in the library (removed or moved meanwhile); the table now shows "
                       f"the library as it is.")
    value = str(value or "").strip().removesuffix(AUTO_MARK.strip()).strip()
    record = correct_track(library, file_path, {field: value})
    return f"Set the {field} of {markdown_text(record['file_path'])} to “{markdown_text(record[field])}”."


def removal_question(library: LiveLibrary, tracks: list[str]) -> str:
    """What the page asks before removing `tracks` (as Markdown): which tracks, and where their files will go.
    A name that is no track is a gr.Error at once, before anything is asked."""
    keys = track_keys(tracks)
    if not keys:
        raise gr.Error("Choose the tracks to remove first.")
    db = current_library(library)
    with user_errors(change=True):
        rows = sorted({find_track(db, key) for key in keys})
    return render_removal_question(db, rows)


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


class LibraryTab:
    """The Library tab as a gr.Blocks of its own (`blocks`, rendered into `page`): its layout, its events and their
    handlers. Each change is one commit (music_mood.edit, music_mood.uploads); after it the library as stored is
    shown in `view` (show_library): the other tabs' mood and genre `filters`, then this tab's table and its note.
    Recommendations read the library per request."""

    def __init__(self, library: LiveLibrary, models: BackgroundModels, page: gr.Blocks,
                 filters: list[tuple[gr.Dropdown, gr.Dropdown]]):
        self.library, self.models, self.page = library, models, page
        self.filters = filters  # (moods, genres) of each other tab
        self.echoes = EditEchoes()
        with gr.Blocks() as self.blocks:
            self._lay_out()
            self.view = [*(dropdown for pair in filters for dropdown in pair), self.table, self.note]
            self._wire()

    def _lay_out(self) -> None:
        gr.Markdown("Add audio files: they are embedded with the same code as `python music_to_vector.py`, "
                    "moved to `processed_music/`, and recommendable at once.")
        with gr.Row():
            self.uploads = gr.File(label="Audio files", file_count="multiple", type="filepath",
                                   file_types=list(AUDIO_EXTENSIONS), elem_id="uploads")
            self.uploads.preprocess = upload_paths
            with gr.Column():
                self.mood_folder = gr.Textbox(label="Mood of these files (optional)", placeholder="calm",
                                              elem_id="upload-mood")
                self.add = gr.Button("Add to library", variant="primary", elem_id="add-music")
                self.status = gr.Markdown("", elem_id="library-status")
        self.note = gr.Markdown(library_table_note(0), elem_id="library-note")
        self.table = gr.Dataframe([], headers=LIBRARY_COLUMNS, type="array", interactive=True, elem_id="library",
                                  static_columns=[i for i, name in enumerate(LIBRARY_COLUMNS)
                                                  if name not in EDITABLE_FIELDS])
        with gr.Row(equal_height=True):
            self.remove_choice = gr.Dropdown([], value=[], multiselect=True, allow_custom_value=True, scale=4,
                                             label="Tracks to remove (choose them, type a track id, or click a "
                                                   "track's file in the table)", elem_id="remove-tracks")
            self.remove = gr.Button("Remove from the library…", variant="stop", scale=1, elem_id="remove")
        with gr.Group(visible=False, elem_id="remove-confirm") as self.confirm_box:
            self.confirm_text = gr.Markdown("", elem_id="remove-question")
            with gr.Row():
                self.confirm = gr.Button("Yes, remove them", variant="stop", elem_id="remove-yes")
                self.cancel = gr.Button("Cancel", elem_id="remove-cancel")

    def _wire(self) -> None:
        shown = [*self.view, self.status]
        self.add.click(logged_as_one_line(self.on_add_music), inputs=[self.uploads, self.mood_folder],
                       outputs=[*shown, self.uploads], api_name="add_music", concurrency_id="models")
        self.table.edit(logged_as_one_line(self.on_edit_cell), inputs=self.table, outputs=shown,
                        api_visibility="private").failure(  # a refused edit: the tab shows what is stored
            logged_as_one_line(self.show_library), outputs=shown, api_visibility="private", queue=False)
        self.table.select(self.on_pick, inputs=self.remove_choice, outputs=self.remove_choice,
                          api_visibility="private", queue=False)
        self.table.change(self.on_table_change, inputs=self.table, outputs=self.remove_choice,
                          api_visibility="private", queue=False)
        self.remove.click(logged_as_one_line(self.on_ask_remove), inputs=self.remove_choice,
                          outputs=[self.confirm_box, self.confirm_text], api_visibility="private", queue=False)
        self.confirm.click(logged_as_one_line(self.on_remove), inputs=self.remove_choice,
                           outputs=[*shown, self.remove_choice, self.confirm_box], api_visibility="private")
        for event in (self.cancel.click, self.remove_choice.change):  # the question names exactly what goes
            event(self.hide_question, outputs=self.confirm_box, api_visibility="private", queue=False)
        gr.api(logged_as_one_line(self.set_track_fields), api_name="set_track_fields")
        gr.api(logged_as_one_line(self.remove_library_tracks), api_name="remove_tracks")

    def library_outputs(self, db: Database) -> tuple:
        """What `view` shows of `db`, in its order: both tabs' filters offer the library's moods and genres."""
        moods, genres = gr.update(choices=tag_values(db, "mood")), gr.update(choices=tag_values(db, "genre"))
        servers = self.library.server_labels()  # a server is shown by its label, never its address
        lines = [hidden_servers(line, servers) for line in source_lines(self.library.paths, db.tracks)]
        note = library_table_note(len(db)) + sources_note(lines)
        return (*(moods, genres) * len(self.filters), library_rows(db, servers), note)

    def show_library(self):
        """The library as stored, and how many tracks it holds: when a page opens (not as it was when the server
        started), and after a refused edit (the page's table may be older than the library)."""
        db = current_library(self.library)
        return (*self.library_outputs(db), f"The library holds {len(db)} track(s).")

    def on_add_music(self, files, mood, progress=gr.Progress(track_tqdm=True)):  # noqa: B008 (how Gradio asks)
        if not files:
            raise gr.Error("Choose one or more audio files first.")
        servers = self.library.server_labels()  # an upload that is a server's song names it: by its label
        try:
            with user_errors(servers=servers):
                models = self.models
                clap_audio = models.audio_model()  # waits for the start-up loads, as the text tower's load must
                tagger = tagger_of(load_clap_text(models.clap_model, models.choice))
                result, problems = add_uploads(self.library.paths, clap_audio, files, mood, progress, tagger=tagger)
        finally:
            self.discard(files)  # copied into new_music/, or refused: the page clears them from the form anyway
        problems = [hidden_servers(problem, servers) for problem in problems]
        for problem in problems:
            gr.Warning(problem)
        db = current_library(self.library)
        return (*self.library_outputs(db), upload_status(result, problems, len(db)), None)

    def discard(self, files) -> None:
        """Remove these uploads, but none a block of the page keeps (Gradio's copy of an example photo)."""
        keep = {str(p) for block in self.page.blocks.values() for p in getattr(block, "keep_in_cache", ())}
        discard_uploads(files, Path(self.page.GRADIO_CACHE), keep)

    def on_edit_cell(self, table, edit: gr.EditData, request: gr.Request):
        """A cell of the table was edited: commit it, then show the library as stored (a failure shows it too)."""
        sent = json.dumps([table, edit.index, edit.value, edit.previous_value], default=str)
        if self.echoes.is_echo(request.session_hash, sent):
            return gr.skip()
        try:
            status = edit_cell(self.library, table, edit.index, edit.value)
        except gr.Error:
            self.echoes.refused(request.session_hash, sent)
            raise
        return (*self.library_outputs(current_library(self.library)), status)

    def on_pick(self, chosen, picked: gr.SelectData):
        """A click on a track's file in the table adds that track to the ones to remove."""
        if picked.index[1] != FILE_COLUMN or not picked.row_value:
            return gr.skip()
        file_path = str(picked.row_value[FILE_COLUMN])
        return gr.skip() if file_path in (chosen or []) else [*(chosen or []), file_path]

    def on_ask_remove(self, chosen):
        """The Remove button only asks: the tracks go when the question is answered yes."""
        return gr.update(visible=True), removal_question(self.library, chosen)

    def on_remove(self, chosen):
        answer = remove_from_library(self.library, chosen)
        return (*self.library_outputs(current_library(self.library)), removal_status(answer), [],
                gr.update(visible=False))

    def hide_question(self):
        return gr.update(visible=False)

    def on_table_change(self, rows):
        return gr.update(choices=removal_choices(rows))

    # The API's own endpoints for the tab's changes, typed by these signatures (gr.api).
    def set_track_fields(self, track: str, fields: dict) -> dict:
        """Correct a track (its file_path or id): fields such as {"mood": "calm"} (title, artist, mood, genre), one
        commit, kept by --rebuild. Returns the track's id, file_path and tags after."""
        return correct_track(self.library, track, fields)

    def remove_library_tracks(self, tracks: list[str]) -> dict:
        """Remove tracks (file paths or ids) from the library in one commit; their files move to removed/ in the
        library folder. Returns {"removed": [{"file_path", "moved_to"}], "tracks": how many are left}."""
        return remove_from_library(self.library, tracks)
